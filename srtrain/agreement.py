"""What every process learns of each optimizer step, without the host waiting for the device.

A step's loss is on the device; reading it at once (`.item()`) would make the host wait for the step to finish
before it queues the next one, and a small model's GPU would idle between steps. Instead each step's sums (the
loss over every process's patches, the stop votes, the training clock) are made by one collective the host does not
wait for, copied to host memory as the device gets there, and read `lag` steps later: 0 on a CPU (nothing runs ahead
of the host there), `GPU_LAG` on a GPU, which then always has steps queued. Every process reads the same sums at the
same step, so all decide alike: they stop at the same step, skip the same non-finite updates (on the device, at
once: `post` returns the flag the optimizer skips by) and fail at the same step.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import torch
from accelerate import Accelerator

GPU_LAG = 2  # steps between a step's end and the host reading its sums on a GPU: the queue the GPU works through


def lag_for(device: torch.device) -> int:
    """How many steps behind the host reads a step's sums on `device`."""
    return 0 if device.type == "cpu" else GPU_LAG


@dataclass(frozen=True)
class StepSums:
    """One optimizer step, as every process sees it."""

    step: int
    loss_sum: float  # the loss times the patches, summed over every process's patches
    patches: int  # over all processes
    signals: float  # processes that voted to stop
    seconds: float  # the training clock, the mean over processes
    lr: float  # the learning rate the step used
    epoch_end: bool  # the epoch's last step

    @property
    def loss(self) -> float:
        return self.loss_sum / self.patches


@dataclass(frozen=True)
class _Posted:
    step: int
    slot: int
    patches: int
    lr: float
    epoch_end: bool


class StepAgreement:
    """The steps posted and not yet read, in a ring of `lag + 1` slots: device rows, host copies (pinned on a GPU)
    and the events that say a copy has arrived. A slot is reused only after its step was read."""

    def __init__(self, accelerator: Accelerator, lag: int) -> None:
        self.accelerator, self.lag = accelerator, lag
        device, slots = accelerator.device, lag + 1
        cuda = device.type == "cuda"
        self.votes = torch.zeros(slots, 2, dtype=torch.float64, pin_memory=cuda)  # (vote, clock) on their way in
        self.sums = torch.zeros(slots, 3, dtype=torch.float64, pin_memory=cuda)  # (loss sum, votes, clock) back
        self.events = [torch.cuda.Event() for _ in range(slots)] if cuda else []
        self.posted: collections.deque[_Posted] = collections.deque()

    def post(
        self, step: int, loss_sum: torch.Tensor, patches: int, lr: float, vote: float, clock: float, epoch_end: bool
    ) -> torch.Tensor:
        """Queue step `step`'s sums (`loss_sum`: this process's, on the device; the rest host numbers). Returns, on
        the device, 1.0 where the summed loss is not finite, else 0.0: the same on every process, for the optimizer
        to skip the update by (`found_inf`) without the host looking."""
        acc, slot = self.accelerator, step % (self.lag + 1)
        self.votes[slot, 0], self.votes[slot, 1] = vote, clock
        local = torch.cat([loss_sum.reshape(1).double(), self.votes[slot].to(acc.device, non_blocking=True)])
        summed = acc.reduce(local, "sum") if acc.num_processes > 1 else local
        self.sums[slot].copy_(summed, non_blocking=True)
        if self.events:
            self.events[slot].record()
        self.posted.append(_Posted(step, slot, patches * acc.num_processes, lr, epoch_end))
        return (~torch.isfinite(summed[0])).float()

    def ready(self) -> list[StepSums]:
        """The steps posted `lag` or more steps ago, oldest first (their copies have arrived or nearly so)."""
        return [self._read() for _ in range(len(self.posted) - self.lag)]

    def drain(self) -> list[StepSums]:
        """Every step posted, oldest first: waits for the device (before a checkpoint, validation or a stop)."""
        return [self._read() for _ in range(len(self.posted))]

    def _read(self) -> StepSums:
        posted = self.posted.popleft()
        if self.events:
            self.events[posted.slot].synchronize()
        loss_sum, signals, seconds = self.sums[posted.slot].tolist()
        n = self.accelerator.num_processes
        return StepSums(posted.step, loss_sum, posted.patches, signals, seconds / n, posted.lr, posted.epoch_end)

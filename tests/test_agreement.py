"""StepAgreement (srtrain/agreement.py): each step's sums read `lag` steps late, in order, the same on every
process; the skip flag for a non-finite loss; and a real training whose host reads every step two steps late (as on
a GPU) ending exactly as the one that reads at once."""

import json

import pytest
import torch
from accelerate import Accelerator
from helpers import (
    STEPS,
    assert_identical,
    checkpointed_job,
    launch,
    metrics,
    needs_data,
    python,
    wandb_history,
    wandb_segments,
)

from srtrain.agreement import StepAgreement, StepSums, lag_for

LOSSES = [0.5, 0.25, float("nan"), 2.0, float("inf"), 1.0, 0.125]


def post_all(agreement: StepAgreement) -> tuple[list[StepSums], list[float]]:
    """Post LOSSES as steps 1.. (4 patches each, vote on step 3, clock = step / 10), reading what is ready after
    each post, then drain; (the sums in the order read, the skip flags)."""
    read, flags = [], []
    for step, loss in enumerate(LOSSES, 1):
        loss_sum = torch.tensor(loss * 4, device=agreement.accelerator.device)
        skip = agreement.post(step, loss_sum, 4, 0.1 * step, float(step == 3), step / 10, step == 7)
        flags.append(skip.item())
        read += agreement.ready()
    return read + agreement.drain(), flags


@pytest.mark.parametrize("lag", [0, 2])
def test_each_step_is_read_lag_steps_late_in_order_with_its_values(lag):
    agreement = StepAgreement(Accelerator(cpu=True), lag)
    read, flags = post_all(agreement)
    assert [s.step for s in read] == list(range(1, 8))
    losses = [s.loss for s in read]
    assert [x for x in losses if x == x] == [x for x in LOSSES if x == x]  # NaN != NaN: compared apart
    assert [s.signals for s in read] == [0, 0, 1, 0, 0, 0, 0]
    assert [s.seconds for s in read] == [step / 10 for step in range(1, 8)]
    assert [s.lr for s in read] == [0.1 * step for step in range(1, 8)]
    assert [s.epoch_end for s in read] == [False] * 6 + [True]
    assert flags == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]  # NaN and inf: the update is skipped


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_sums_come_back_through_pinned_memory_as_on_a_cpu():
    """The GPU's ring (pinned copies, events) reads what the CPU reads, and the skip flag lies on the GPU."""
    agreement = StepAgreement(Accelerator(), lag_for(torch.device("cuda")))
    assert agreement.sums.is_pinned() and agreement.votes.is_pinned() and len(agreement.events) == agreement.lag + 1
    on_gpu, _ = post_all(agreement)
    on_cpu, _ = post_all(StepAgreement(Accelerator(cpu=True), 0))
    assert repr(on_gpu) == repr(on_cpu)  # (as text: NaN equals NaN)
    flag = agreement.post(8, torch.tensor(float("nan"), device="cuda"), 1, 0.0, 0.0, 0.0, False)
    assert flag.is_cuda and flag.shape == () and flag.item() == 1.0


def test_a_step_is_ready_only_lag_steps_after_it_was_posted():
    agreement = StepAgreement(Accelerator(cpu=True), 2)
    ready = []
    for step in range(1, 6):
        agreement.post(step, torch.tensor(1.0), 1, 0.0, 0.0, 0.0, False)
        ready.append([s.step for s in agreement.ready()])
    assert ready == [[], [], [1], [2], [3]]
    assert [s.step for s in agreement.drain()] == [4, 5] and agreement.drain() == []


def test_the_host_reads_without_waiting_only_on_a_cpu():
    assert lag_for(torch.device("cpu")) == 0 and lag_for(torch.device("cuda", 0)) >= 1


TWO_RANKS = """
import json, os, torch
from accelerate import Accelerator
from srtrain.agreement import StepAgreement
from srtrain.launch import end_process
acc = Accelerator(cpu=True)
agreement, rank, read, flags = StepAgreement(acc, 2), acc.process_index, [], []
for step in range(1, 7):  # rank 1's loss is NaN at step 4 alone, rank 0 votes to stop at step 5
    loss = float("nan") if (rank, step) == (1, 4) else step * (rank + 1)
    skip = agreement.post(step, torch.tensor(float(loss)), 2, 0.0, float((rank, step) == (0, 5)), 10.0 * rank, False)
    flags.append(skip.item())
    read += agreement.ready()
read += agreement.drain()
line = json.dumps([flags, [[s.step, s.loss_sum, s.patches, s.signals, s.seconds] for s in read]])
os.write(1, (line + "\\n").encode())  # one write: the ranks share the pipe
end_process(0)  # (gloo's threads and the interpreter's exit: srtrain.launch.end_process)
"""


@pytest.mark.slow
def test_two_processes_read_the_same_sums_and_skip_the_same_steps(tmp_path):
    """Two gloo ranks: the loss summed over both, the patches of both, the votes counted, the mean clock; a NaN on
    one rank is a skip on both."""
    script = tmp_path / "ranks.py"
    script.write_text(TWO_RANKS)
    proc = launch([str(script)], tmp_path, 2, ACCELERATE_USE_CPU="1")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and lines[0] == lines[1]  # (as text: NaN equals NaN)
    flags, read = json.loads(lines[0])
    assert flags == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert [row[0] for row in read] == [1, 2, 3, 4, 5, 6] and read[3][1] != read[3][1]  # step 4: NaN
    finite = [row for row in read if row[0] != 4]
    assert finite == [[step, 3.0 * step, 4, float(step == 5), 5.0] for step in (1, 2, 3, 5, 6)]


LAGGED = """
import sys
import srtrain.agreement
srtrain.agreement.lag_for = lambda device: 2  # the host reads every step two steps late, as on a GPU
from srtrain.commands.train import main
sys.exit(main(sys.argv[1:]))
"""


@needs_data
@pytest.mark.slow
def test_a_run_read_two_steps_late_ends_as_the_one_read_at_once(reference, photo_folder, tmp_path):
    """The lag changes when the host learns of a step, nothing the step does: the same weights bit for bit, the
    same metrics rows (the epoch's loss summed from every step), the same loss and learning rate in W&B at every
    step, each epoch's row on its last step."""
    out = tmp_path / "run"
    python(["-c", LAGGED, *checkpointed_job(photo_folder, out)], tmp_path, WANDB_MODE="offline")
    assert_identical(out, reference)
    for row, ref in zip(metrics(out), metrics(reference), strict=True):
        assert {k: row[k] for k in UNTIMED} == {k: ref[k] for k in UNTIMED}
    (lagged,), (at_once,) = wandb_segments(out), wandb_segments(reference)
    assert curve(lagged) == curve(at_once) and len(curve(lagged)) == STEPS


UNTIMED = ("epoch", "step", "train_loss", "val_loss", "psnr_y", "ssim_y", "lr", "best_psnr_y")


def curve(wandb_run) -> list[tuple]:
    """(step, loss, learning rate, epoch) of each step an offline W&B run logged."""
    return [(h["_step"], h["train/loss"], h["train/lr"], h.get("epoch")) for h in wandb_history(wandb_run)]

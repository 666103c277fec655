"""When training stops: the epoch cap, the time budget, or a signal, decided the same way on every rank.

A batch system preempts a job with a signal (SLURM: SIGTERM, or SIGUSR1/SIGUSR2 with `--signal`), a user with
Ctrl-C. The trainer then finishes the current step, all ranks agree in the step's one collective (so that no rank
waits forever for another), it saves `checkpoints/last` at that step, flushes W&B and exits with `EXIT_RESUMABLE`,
leaving `STOPPED_FILE` in the run directory. A second SIGINT exits at once, without a checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
from pathlib import Path

from srtrain.files import write_text_atomically

EXIT_RESUMABLE = 75  # EX_TEMPFAIL from sysexits.h: "stopped to be resumed", neither success (0) nor a crash (1)
STOPPED_FILE = "stopped.json"  # in the run directory while its last stop was a resumable one
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
_PR_SET_PDEATHSIG = 1


def started_by_launcher() -> bool:
    """`accelerate launch` (either launcher) sets ACCELERATE_DYNAMO_BACKEND for its workers, torchrun sets
    TORCHELASTIC_RUN_ID; a trainer started from a shell (e.g. under nohup) has neither."""
    return "ACCELERATE_DYNAMO_BACKEND" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def die_with_parent() -> None:
    """Have the kernel send us SIGTERM when our launcher dies (Linux): `accelerate launch` with one process
    does not forward signals, and torchrun's agent dies on SIGUSR1; either way the trainer then stops cleanly
    with a checkpoint instead of training on as an orphan. Not when started from a shell, which may exit
    (nohup) while the trainer is meant to go on."""
    libc = ctypes.CDLL(None, use_errno=True)
    if started_by_launcher() and hasattr(libc, "prctl"):
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


def ignore_warning_signals() -> None:
    """For a command's process once its work is done: ignore SIGUSR1/2 ("save soon") until it exits. The
    interpreter's exit restores the default action of every signal with a Python handler, so a late one (SLURM's
    time-limit warning) would kill the finished process, and its batch script would requeue a complete run. Ignored
    dispositions are inherited by children, so never call this where the process goes on (training as a library)."""
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


class StoppedToResume(Exception):
    """Training stopped on a signal after saving a checkpoint: exit with EXIT_RESUMABLE."""


class Stopper:
    """The one place that knows why training stops. `vote()` is this rank's vote for the step's collective;
    `update` reads the agreed result (any rank signalled; the mean training clock) back."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.train_seconds = budget_s, 0.0
        self.signal_name = ""  # set by the handler on this rank
        self.agreed_signal = False  # set by `update` on every rank at once

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        die_with_parent()

    def _handle(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            os._exit(130)  # the second Ctrl-C: stop now, as a user who presses it twice means
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def vote(self) -> float:
        return 1.0 if self.signal_name else 0.0

    def update(self, any_signal: bool, train_seconds: float) -> None:
        self.agreed_signal = self.agreed_signal or any_signal
        self.train_seconds = train_seconds

    def progress_of_budget(self) -> float:
        return self.train_seconds / self.budget_s if self.budget_s else 0.0

    def out_of_time(self) -> bool:
        return bool(self.budget_s) and self.train_seconds >= self.budget_s

    def stop_now(self) -> bool:
        """Leave the epoch after this step: a signal or the budget."""
        return self.agreed_signal or self.out_of_time()

    def write_marker(self, out_dir: Path, step: int, epochs_done: int) -> None:
        """Tell a batch script, which sees only the launcher's exit code, that this stop is resumable. The stop
        came in epoch `epochs_done + 1` (as the stop's message says)."""
        record = {
            "signal": self.signal_name or "peer",
            "step": step,
            "epochs_done": epochs_done,
            "exit_code": EXIT_RESUMABLE,
        }
        write_text_atomically(out_dir / STOPPED_FILE, json.dumps(record) + "\n")

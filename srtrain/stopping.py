"""When training stops: the epoch cap, the time budget, or a signal, decided the same way on every rank.

A batch system preempts a job with a signal (SLURM: SIGTERM, or SIGUSR1/SIGUSR2 with `--signal`), a user with
Ctrl-C. It saves `checkpoints/last`, leaves a marker (`RunDir.stopped`) in the run directory, finishes W&B and
exits with `EXIT_RESUMABLE`. A second SIGINT exits at once, without a checkpoint.
- Several processes: each finishes the current step and all read the votes from the step's one collective (so
  that no rank waits forever for another; on a GPU the host reads them `agreement.GPU_LAG` steps later, so all stop
  that many steps on); torchrun's agent, which forwards the signal, grants them 30 s.
- One process: a watcher thread hears the signal at once, even inside a long step, and saves the last completed
  step from a forked process. `accelerate launch` 1.16 terminates its child's whole process tree on SIGTERM and
  SIGKILLs it 5 s later, however long the step or the save; a process forked after that moment is out of its
  reach, so a save of any length completes (the step in flight is given up: "at most the current step is lost").
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from srtrain.files import write_text_atomically

EXIT_RESUMABLE = 75  # EX_TEMPFAIL from sysexits.h: "stopped to be resumed", neither success (0) nor a crash (1)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
_PR_SET_PDEATHSIG = 1
# After a stop signal, how long the watcher waits for the launcher's own SIGTERM: a signal sent to the whole job
# (Ctrl-C, SLURM's scancel) reaches the launcher too, which lists its process tree, then terminates it. The save is
# forked after that, out of the list; a signal to the trainer alone just waits this long.
LAUNCHER_GRACE_S = 1.0


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


def log_past_launcher() -> None:
    """`accelerate launch` 1.16 with one process pipes the trainer's stderr through itself: once it is gone (a
    SIGUSR1 kills it, SIGTERM ends it after 5 s) a line the trainer writes meets a closed pipe and the stop line is
    lost. Write to the launcher's own stderr (the job's log, a terminal) instead, which outlives it. Anywhere else
    (no launcher, torchrun's workers, which share their launcher's stderr) nothing changes."""
    if not started_by_launcher():
        return
    try:
        ours, parent = os.readlink("/proc/self/fd/2"), Path(f"/proc/{os.getppid()}/fd")
        if not ours.startswith("pipe:") or os.readlink(parent / "2") == ours:
            return
        if not any(os.readlink(fd) == ours for fd in parent.iterdir()):
            return  # a pipe, but not the launcher's: someone else reads it (`| tee log`)
        log = os.open(parent / "2", os.O_WRONLY | os.O_APPEND)  # O_APPEND: never over the log's first lines
    except OSError:  # no /proc, the launcher gone already, a socket: keep the pipe
        return
    sys.stderr.flush()
    os.dup2(log, 2)
    os.close(log)


def exit_status(wait_status: int) -> int:
    """A waited-for child's status as a shell reports it (a death by signal N: 128 + N)."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


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
    `update` reads the agreed result (any rank signalled; the mean training clock) back (`StepAgreement`). With one
    process, `arm` hands the stop to a watcher thread instead; the loop changes weights and state only inside
    `updating()`."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.train_seconds = budget_s, 0.0
        self.signal_name = ""  # set by the handler on this rank (the main thread, once it runs Python again)
        self.heard = ""  # set by the watcher (`arm`) at once
        self.agreed_signal = False  # set by `update` on every rank at once
        self.armed = False  # a watcher thread stops this process (one process only)
        self._lock = threading.Lock()  # held by the loop while it changes the state, by the watcher for good
        self._wake_r, self._wake_w = os.pipe()

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        die_with_parent()
        log_past_launcher()

    def _handle(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            os._exit(130)  # the second Ctrl-C: stop now, as a user who presses it twice means
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def arm(self, save: Callable[[], int], finish: Callable[[], None], fork: bool) -> None:
        """One process: from now on a stop signal is answered by a watcher thread, at once, not at the step's end.
        It waits for the loop's update in progress, runs `save` (the checkpoint of the last completed step and the
        marker; returns the exit status) in a forked child when `fork` (the weights are in host memory), else in
        the thread, runs `finish` (W&B) meanwhile, and exits the process with `save`'s status."""
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)  # the C-level handler writes here at once, whatever the main thread does
        self.armed = True
        threading.Thread(target=self._watch, args=(save, finish, fork), name="srtrain-stop", daemon=True).start()

    def disarm(self) -> None:
        """Training is over (done, or failed): signals go back to the flag alone."""
        with self._lock:
            self.armed = False

    def updating(self) -> _Updating:
        """The loop's context for changing weights and state; after a stop signal it never returns (the watcher
        saves what the state was and ends the process)."""
        return _Updating(self)

    def _watch(self, save: Callable[[], int], finish: Callable[[], None], fork: bool) -> None:
        while not self.signal_name:  # (a signal before `arm` set the name but wrote no byte)
            if (signum := os.read(self._wake_r, 1)[0]) in STOP_SIGNALS:
                self.heard = signal.Signals(signum).name
                break
        self._lock.acquire()  # released never: the loop's next update waits here until the process exits
        if not self.armed:
            self._lock.release()
            return
        status = 1
        try:
            os.set_blocking(self._wake_r, False)
            with suppress(BlockingIOError):
                os.read(self._wake_r, 4096)  # the signals heard so far: wait for a later one
            select.select([self._wake_r], [], [], LAUNCHER_GRACE_S)  # see LAUNCHER_GRACE_S
            if fork and (pid := os.fork()) == 0:
                try:
                    status = save()
                finally:
                    os._exit(status)
            if fork:
                finish()
                status = exit_status(os.waitpid(pid, 0)[1])
            else:
                status = save()
                finish()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def cause(self) -> str:
        """The signal that stopped this process ('' for a stop agreed because another rank heard one)."""
        return self.signal_name or self.heard

    def handing_over(self) -> bool:
        """Signalled with a watcher armed: it saves this state, the loop must not write a checkpoint of its own."""
        return self.armed and bool(self.signal_name)

    def vote(self) -> float:
        return 1.0 if self.signal_name and not self.armed else 0.0

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

    def write_marker(self, path: Path, step: int, epochs_done: int) -> None:
        """Tell a batch script, which sees only the launcher's exit code, that this stop is resumable. The stop
        came in epoch `epochs_done + 1` (as the stop's message says)."""
        record = {
            "signal": self.cause() or "peer",
            "step": step,
            "epochs_done": epochs_done,
            "exit_code": EXIT_RESUMABLE,
        }
        write_text_atomically(path, json.dumps(record) + "\n")


class _Updating:
    """`Stopper.updating()`: the lock, and a loop that meets a stop signal waits for the watcher's exit."""

    def __init__(self, stopper: Stopper) -> None:
        self.stopper = stopper

    def __enter__(self) -> None:
        stopper = self.stopper
        stopper._lock.acquire()
        if stopper.handing_over():  # the state stays at the last completed step
            stopper._lock.release()
            threading.Event().wait()

    def __exit__(self, *_exc: object) -> None:
        self.stopper._lock.release()

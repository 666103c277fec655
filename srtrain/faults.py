"""A test hook: `SRTRAIN_FAULT=ACTION:POINT:N` makes the main process fail at a known place, so that the fault
tests are deterministic rather than timed. Not for users; unset, it costs one string comparison per point.

POINT (with N): `step` (after optimizer step N), `checkpoint` (in the write of the checkpoint at step N, after the
weights file, before the rest), `validation` (in epoch N's validation), `epoch_end` (after epoch N's checkpoint,
before its W&B log and metrics line), `after_log` (right after epoch N's row is logged to W&B, before its metrics
line: within W&B's file flush interval), `exit` (N=1: the command done, the process about to exit). ACTION: `kill`
(SIGKILL, as the OOM killer does), `enospc` (the write fails as on a full disk), `pause` (write `fault_ready` in
the working directory, then wait until the test sends a stop signal or deletes `fault_ready` to let the run go on).
Several, comma-separated: `pause:step:3,pause:checkpoint:3`.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

READY_FILE = "fault_ready"
_SPECS = [spec.split(":") for spec in os.environ.get("SRTRAIN_FAULT", "").split(",") if spec]


def inject(point: str, n: int, main: bool, stop_requested: Callable[[], bool] = lambda: False) -> None:
    """Fail here if SRTRAIN_FAULT names this point and number (main process only)."""
    if not _SPECS or not main:
        return
    action = next((action for action, where, at in _SPECS if where == point and int(at) == n), "")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "(SRTRAIN_FAULT)")
    elif action == "pause":
        ready = Path(READY_FILE)
        ready.write_text(str(os.getpid()))
        while not stop_requested() and ready.exists():
            time.sleep(0.01)

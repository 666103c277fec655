"""srtrain/stopping.py: when training stops (a signal, a second Ctrl-C, the time budget), for real: signals through
`accelerate launch` with 1 and 2 processes, a save that outlives the launcher, a signal in validation, a SLURM
warning after the work is done. Each stopped run is resumed and compared with one that never stopped.

Pauses come from `SRTRAIN_FAULT` (srtrain/faults.py), so that every signal arrives at a known step, not a time.
"""

import json
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    MAIN,
    STEPS,
    assert_identical,
    checkpointed_job,
    last_weights,
    launch,
    launcher_status,
    metrics,
    needs_data,
    paused_launch,
    paused_srtrain,
    python,
    srtrain,
    tiny_job,
    wait_gone,
)

from srtrain.checkpoint import read_state
from srtrain.faults import READY_FILE
from srtrain.rundir import RunDir
from srtrain.stopping import EXIT_RESUMABLE

pytestmark = needs_data
job = checkpointed_job


def test_second_sigint_exits_at_once():
    code = (
        "import os, signal, time\n"
        "from srtrain.stopping import Stopper\n"
        "s = Stopper(0); s.install()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "while not s.signal_name: time.sleep(0.01)\n"
        "print(s.signal_name, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(600)\n"
    )
    proc = python(["-c", code], check=False)
    assert proc.returncode == 130 and proc.stdout.strip() == "SIGINT"


@pytest.mark.slow
def test_time_budget_stops_training(photo_folder, tmp_path):
    out = tmp_path / "run"
    args = tiny_job(photo_folder, out, "--epochs=10000", "--time_budget_min=0.05", "--val_every=1000")
    srtrain(args, tmp_path, check=True)
    (row,) = metrics(out)  # validated once, when the budget ran out
    assert row["epoch"] < 10000 and row["train_minutes"] >= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_stop_and_requeue_through_the_launcher(reference, photo_folder, tmp_path, sig):
    """SIGTERM or SIGUSR1 to `accelerate launch` with 1 process (1.15: the launcher dies by either at once and the
    trainer hears of it by PDEATHSIG, as SIGTERM; 1.16: SIGTERM reaches the trainer from the launcher, which
    SIGKILLs it 5 s later) stops the trainer at the current step with a checkpoint, the marker, its stop line in the
    launcher's log and exit 75; no process is left; the resumed run ends bit-identical to the uninterrupted one."""
    out = tmp_path / "run"
    worker, launcher = paused_launch(1, job(photo_folder, out), tmp_path, "pause:step:3")
    launcher.send_signal(sig)
    assert launcher.wait(timeout=60) == launcher_status(1, sig)
    wait_gone(worker)
    assert "srtrain: stopped by SIGTERM at step 3 (epoch 1, batch 3)" in launcher.stderr.read()
    stopped = json.loads(RunDir(out).stopped.read_text())
    assert stopped["exit_code"] == EXIT_RESUMABLE and stopped["signal"] == "SIGTERM" and stopped["step"] == 3
    assert stopped["epochs_done"] == 0  # stopped in epoch 1
    state = read_state(out / "checkpoints" / "last")
    assert (state.step, state.batches_done) == (3, 3)
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not RunDir(out).stopped.exists()
    assert_identical(out, reference)


@pytest.mark.slow
def test_a_save_slower_than_the_launchers_grace_still_completes(reference, photo_folder, tmp_path):
    """accelerate 1.16's launcher SIGKILLs its process tree 5 s after SIGTERM, however long the save. The trainer
    saves from a process forked after that tree was listed: here its save is held in the middle (the fault hook)
    until the launcher has exited, and still completes: the checkpoint at the step, the marker, the stop line in
    the launcher's log, 75; nothing left running. The resumed run ends bit-identical to the uninterrupted one."""
    out = tmp_path / "run"
    trainer, launcher = paused_launch(1, job(photo_folder, out), tmp_path, "pause:step:3,pause:checkpoint:3")
    launcher.send_signal(signal.SIGTERM)
    ready, deadline = tmp_path / READY_FILE, time.monotonic() + 60
    while not ready.exists() or ready.read_text() in ("", str(trainer)):  # the checkpoint writer pauses in turn
        assert time.monotonic() < deadline
        time.sleep(0.1)
    saver = int(ready.read_text())
    assert launcher.wait(timeout=60) == launcher_status(1, signal.SIGTERM)
    assert Path(f"/proc/{saver}").exists() and not RunDir(out).stopped.exists()  # the save outlived the launcher
    ready.unlink()
    wait_gone(saver)
    wait_gone(trainer)
    assert "srtrain: stopped by SIGTERM at step 3 (epoch 1, batch 3)" in launcher.stderr.read()
    assert json.loads(RunDir(out).stopped.read_text())["step"] == 3
    assert read_state(out / "checkpoints" / "last").step == 3
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, reference)


@pytest.mark.slow
def test_a_signal_during_validation_saves_the_epochs_last_step(reference, photo_folder, tmp_path):
    """One process, a signal while the main thread is busy outside a step (here: held in epoch 1's validation):
    the watcher saves at once what the state is, the epoch's last step, without waiting for the main thread; the
    resume validates epoch 1 without training it again and ends bit-identical, each epoch once in metrics.jsonl."""
    out = tmp_path / "run"
    trainer = paused_srtrain(job(photo_folder, out), tmp_path, "pause:validation:1", "disabled")
    trainer.send_signal(signal.SIGTERM)
    _, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode == EXIT_RESUMABLE, stderr[-3000:]
    assert "srtrain: stopped by SIGTERM at step 4 (epoch 1, batch 4)" in stderr
    state = read_state(out / "checkpoints" / "last")
    assert (state.step, state.epoch, state.batches_done) == (STEPS // 2, 0, STEPS // 2)
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, reference)
    assert [r["epoch"] for r in metrics(out)] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_two_processes_stop_together_on_a_signal(reference, photo_folder, tmp_path, sig):
    """2 processes: the launcher forwards SIGTERM (and SIGUSR1 with PET_SIGNALS_TO_HANDLE, as docs/faults.md says),
    both ranks agree in the step's collective, one checkpoint, the marker; the launcher itself exits after its
    workers (1 with accelerate 1.15, 128 + N with 1.16), leaving none. Resumed, the run matches 1 process within
    float tolerance."""
    out = tmp_path / "run"
    args = job(photo_folder, out, "--batch_size=4")
    worker, launcher = paused_launch(2, args, tmp_path, "pause:step:5")
    launcher.send_signal(sig)
    assert launcher.wait(timeout=120) == launcher_status(2, sig)
    wait_gone(worker)
    stopped = f"srtrain: stopped by {signal.Signals(sig).name} at step 5"
    assert launcher.stderr.read().count(stopped) == 2  # both ranks, 75 each
    assert json.loads(RunDir(out).stopped.read_text())["step"] == 5
    assert read_state(out / "checkpoints" / "last").step == 5
    env = {"WANDB_MODE": "disabled", "ACCELERATE_USE_CPU": "1", "SRTRAIN_FAULT": ""}
    launch([MAIN, *args, "--resume=auto"], tmp_path, 2, **env)
    for file in ("model.safetensors", "ema.safetensors"):  # (both ranks' averages were compared at each save)
        w, ref = last_weights(out, file), last_weights(reference, file)
        for name in ref:
            torch.testing.assert_close(w[name], ref[name], rtol=1e-4, atol=2e-5)


@pytest.mark.slow
def test_a_warning_signal_after_training_is_done_is_ignored(photo_folder, tmp_path):
    """SLURM's time-limit warning (USR1) can come after training ended, while the process exits: the interpreter's
    exit restores default actions, so USR1 would kill the finished run and the batch script requeue it. Once done,
    USR1/USR2 are ignored (asserted on the kernel's record of the process), and the run ends with 0, no marker."""
    out = tmp_path / "run"
    trainer = paused_srtrain(job(photo_folder, out, "--epochs=1"), tmp_path, "pause:exit:1", "disabled")
    status = Path(f"/proc/{trainer.pid}/status").read_text()
    ignored = int(re.search(r"SigIgn:\s*([0-9a-f]+)", status).group(1), 16)
    assert all(ignored >> (sig - 1) & 1 for sig in (signal.SIGUSR1, signal.SIGUSR2))
    trainer.send_signal(signal.SIGUSR1)
    (tmp_path / READY_FILE).unlink()
    _, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode == 0, stderr[-3000:]
    assert not RunDir(out).stopped.exists() and [r["epoch"] for r in metrics(out)] == [1]

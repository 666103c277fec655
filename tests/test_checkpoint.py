"""srtrain/checkpoint.py: a checkpoint is whole or passed over. Its manifest against damaged files, the previous
checkpoint when the last is damaged, and a full disk (a real tmpfs) that fails a save without losing the previous."""

import contextlib
import os
import shutil
import signal
import subprocess

import pytest
import torch
from helpers import checkpointed_job, metrics, needs_data, paused_srtrain, srtrain

from srtrain.checkpoint import TrainState, checkpoint_problem, read_state, save_checkpoint
from srtrain.models import build_model

pytestmark = needs_data
job = checkpointed_job


def test_a_checkpoint_whose_files_differ_from_its_manifest_is_named(tmp_path):
    """What a resume, eval and upscale check before they load: truncated, corrupt at the same size, a manifest of
    the wrong shape, none."""
    model = build_model("espcn", 2, channels=16)
    folder = tmp_path / "last"
    save_checkpoint(folder, model, torch.optim.Adam(model.parameters()), TrainState(epoch=3, step=12), "scale: 2\n")
    assert checkpoint_problem(folder) == "" and (read_state(folder).epoch, read_state(folder).step) == (3, 12)
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "truncated" in checkpoint_problem(damaged)
    shutil.copytree(folder, damaged, dirs_exist_ok=True)
    state = damaged / "training_state.pt"
    data = bytearray(state.read_bytes())
    data[10] ^= 0xFF  # corrupt, same size
    state.write_bytes(bytes(data))
    assert "checksum" in checkpoint_problem(damaged)
    (damaged / "manifest.json").write_text("[]")
    assert "is not a manifest" in checkpoint_problem(damaged)
    (damaged / "manifest.json").unlink()
    assert "manifest" in checkpoint_problem(damaged)


@pytest.mark.slow
def test_damaged_last_checkpoint_falls_back_to_the_previous(reference, photo_folder, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    model = out / "checkpoints" / "last" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])  # truncated
    assert "truncated" in checkpoint_problem(out / "checkpoints" / "last")
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=3"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "damaged checkpoint passed over" in proc.stdout and "last.old" in proc.stdout
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3]

    old = out / "checkpoints" / "last.old" / "training_state.pt"
    old.write_bytes(old.read_bytes()[:10] + b"x" + old.read_bytes()[11:])  # corrupt, same size
    last = out / "checkpoints" / "last" / "manifest.json"
    last.unlink()
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=4"), tmp_path, wandb="disabled")
    assert proc.returncode == 2
    assert "no complete checkpoint" in proc.stderr and "checksum" in proc.stderr and "manifest" in proc.stderr


@contextlib.contextmanager
def small_disk(path):
    """A real 16 MiB tmpfs at `path` (root can mount one); None where mounting is not permitted."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)], capture_output=True)
    try:
        yield path if mounted.returncode == 0 else None
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("room", [0, 200 * 1024], ids=["weights", "optimizer_state"])
def test_full_disk_keeps_the_previous_checkpoint(photo_folder, tmp_path, room):
    """The disk fills while the job is paused (all of it, or all but room for the weights file, so that torch's zip
    writer of the optimizer state is the one to fail: a RuntimeError, not an OSError); its stop checkpoint fails:
    one line, no traceback, no partial `last.tmp` left, the previous checkpoint intact and resumable once space is
    freed. Without permission to mount, the write fails at the same place through the fault hook's ENOSPC."""
    with small_disk(tmp_path / "disk") as disk:
        out = (disk or tmp_path) / "run"
        if disk is None:
            proc = srtrain(job(photo_folder, out), tmp_path, "enospc:checkpoint:3", wandb="disabled")
        else:
            trainer = paused_srtrain(job(photo_folder, out), tmp_path, "pause:step:3", "disabled")
            stat = os.statvfs(disk)
            with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - room))
            trainer.send_signal(signal.SIGTERM)
            stdout, stderr = trainer.communicate(timeout=120)
            proc = subprocess.CompletedProcess(trainer.args, trainer.returncode, stdout, stderr)
            (disk / "filler").unlink()
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "could not write checkpoint" in proc.stderr and "intact" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
        assert checkpoint_problem(out / "checkpoints" / "last") == ""
        assert read_state(out / "checkpoints" / "last").step == 2
        assert not (out / "checkpoints" / "last.tmp").exists()
        proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path, wandb="disabled")
        assert proc.returncode == 0, proc.stderr[-3000:]

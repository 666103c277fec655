"""srtrain/rundir.py: one run, one directory. Which checkpoint a resume starts from, what it accepts or refuses,
the lock, and the repairs after a kill (metrics.jsonl, W&B segments), on real killed and damaged runs.

Kill points come from `SRTRAIN_FAULT` (srtrain/faults.py), so that every run is deterministic, not timed.
"""

import fcntl
import random
import re
import shutil
import signal
from pathlib import Path

import pytest
from helpers import (
    STEPS,
    assert_identical,
    checkpointed_job,
    metrics,
    needs_data,
    srtrain,
    wandb_history,
    wandb_segments,
)

from srtrain.checkpoint import checkpoint_problem, read_state
from srtrain.config import ConfigError, load_config, saved_config
from srtrain.rundir import RunDir, run_dir_name

job = checkpointed_job


@needs_data
@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bit_identical(reference, photo_folder, tmp_path):
    """SIGKILL at seeded random steps, inside a checkpoint write, in validation, between an epoch's checkpoint
    and its W&B log, and right after that log (before its metrics line); after each, `--resume=auto`. The end: the
    same weights, bit for bit, every epoch exactly once in metrics.jsonl and across the W&B segments (at its step),
    one W&B run whose steps continue."""
    rng = random.Random(9)
    a, b = rng.randint(2, STEPS // 2), rng.randint(STEPS // 2 + 1, STEPS - 1)
    c = rng.randint(b + 1, STEPS)
    faults = [
        f"kill:step:{a}",
        "kill:validation:1",
        "kill:epoch_end:1",
        f"kill:checkpoint:{b}",
        f"kill:step:{c}",
        "kill:after_log:2",  # within W&B's file flush interval after the row's log: the file may lack it
    ]
    out = tmp_path / "run"
    for i, fault in enumerate(faults):
        proc = srtrain(job(photo_folder, out, *(["--resume=auto"] if i else [])), tmp_path, fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr[-3000:])
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The last kill came after epoch 2's checkpoint: the run is finished. Its W&B file holds epoch 2's row or not,
    # as the flush timer had it: if not, the resume opens a segment to restore it; if so, there is nothing to do.
    finished = "already finished (epoch 2 of 2" in proc.stdout
    assert finished or "resuming at step" in proc.stdout
    assert_identical(out, reference)
    rows, ref_rows = metrics(out), metrics(reference)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row, ref in zip(rows, ref_rows, strict=True):
        for key in ("step", "train_loss", "val_loss", "psnr_y", "lr"):
            assert row[key] == ref[key], key
    assert read_state(out / "checkpoints" / "best").epoch == read_state(reference / "checkpoints" / "best").epoch
    segments = wandb_segments(out)
    assert len(segments) == len(faults) + (not finished) and len({p.name.rsplit("-", 1)[1] for p in segments}) == 1
    history = [h for run in segments for h in wandb_history(run)]
    epochs = [(h["epoch"], h["_step"]) for h in history if "psnr_y" in h]
    assert sorted(epochs) == [(1, STEPS // 2), (2, STEPS)]  # each epoch exactly once, on the optimizer-step axis
    # The loss curve continues on one step axis: the last segment logs from its checkpoint's step on (and the
    # checkpoint's own step first when it restores that step's row).
    if not finished:
        final = [h["_step"] for h in wandb_history(segments[-1]) if "train/loss" in h]
        resumed_at = int(re.search(r"resuming at step (\d+)", proc.stdout).group(1))
        assert final in (list(range(resumed_at + 1, STEPS + 1)), list(range(resumed_at, STEPS + 1)))


@needs_data
@pytest.mark.slow
def test_a_kill_before_the_first_checkpoint_then_resume_starts_the_run_over(reference, photo_folder, tmp_path):
    """Preempted early in epoch 1, the run directory holds a config.yaml and no checkpoint: `--resume=auto` (what a
    requeued job runs) starts the same job over there, and ends as the uninterrupted run; another job is refused."""
    out = tmp_path / "run"
    proc = srtrain(job(photo_folder, out), tmp_path, "kill:step:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (out / "config.yaml").is_file() and not (out / "checkpoints").exists()
    other = srtrain(job(photo_folder, out, "--resume=auto", "--lr=0.001"), tmp_path)
    assert other.returncode == 2 and "no checkpoint yet whose configuration differs in lr: 0.002 -> 0.001" in " ".join(
        other.stderr.split()
    )
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "has no checkpoint yet: the run starts over there" in " ".join(proc.stdout.split())
    assert_identical(out, reference)
    segments = wandb_segments(out)
    assert len(segments) == 2 and len({p.name.rsplit("-", 1)[1] for p in segments}) == 1  # one W&B run, no orphan
    epochs = [h["epoch"] for run in segments for h in wandb_history(run) if "psnr_y" in h]
    assert sorted(epochs) == [1, 2]


@needs_data
@pytest.mark.slow
def test_resume_auto_never_starts_a_trained_run_over(photo_folder, tmp_path):
    """`checkpoints/last` and `last.old` gone (a clean-up), but the run trained (`best`, metrics rows, samples):
    `--resume=auto` must not start it over on top of that. It is refused by name, with the way on from `best`,
    which then continues the run in its directory."""
    out = tmp_path / "run"
    assert srtrain(job(photo_folder, out, "--epochs=1"), tmp_path, wandb="disabled").returncode == 0
    for name in ("last", "last.old"):
        shutil.rmtree(out / "checkpoints" / name, ignore_errors=True)
    before = (out / "metrics.jsonl").read_text()
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path, wandb="disabled")
    best = out / "checkpoints" / "best"
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "it trained (checkpoints/best, metrics.jsonl, samples/)" in proc.stderr
    assert f"--resume={best} --output_dir={out}" in proc.stderr
    assert (out / "metrics.jsonl").read_text() == before and read_state(best).epoch == 1
    proc = srtrain(job(photo_folder, out, f"--resume={best}"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["epoch"] for r in metrics(out)] == [1, 2] and read_state(out / "checkpoints" / "last").epoch == 2


@needs_data
@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_adds_no_wandb_segment(reference, tmp_path, photo_folder):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    segments = wandb_segments(out)
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"srtrain: {out} already finished (epoch 2 of 2" in proc.stdout and "raise --epochs" in proc.stdout
    assert wandb_segments(out) == segments


@needs_data
@pytest.mark.slow
def test_a_resume_with_another_data_size_says_the_schedule_changes(photo_folder, tmp_path):
    """data.train may change on a resume (docs/faults.md); when the epoch's length changes with it, so does the
    learning-rate schedule: one line says so."""
    out, more = tmp_path / "run", tmp_path / "more"
    shutil.copytree(photo_folder, more)
    for image in list(more.glob("*.png"))[:2]:
        shutil.copy(image, more / f"copy_{image.name}")
    assert srtrain(job(photo_folder, out), tmp_path, "kill:step:3", wandb="disabled").returncode == -signal.SIGKILL
    proc = srtrain(job(more, out, "--resume=auto"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: the training data now makes 6 batches per epoch where the checkpoint's run had 4" in proc.stdout


@needs_data
@pytest.mark.slow
def test_a_cut_off_metrics_line_and_a_damaged_manifest_do_not_block_the_resume(reference, photo_folder, tmp_path):
    """A full disk cut the last row of metrics.jsonl; the manifest of `last` is JSON of the wrong shape; a file
    lies where `last.tmp` goes. The resume warns, drops the cut row (the checkpoint holds its epoch's row), falls
    back to `last.old`, writes its checkpoints all the same, and continues."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    rows = out / "metrics.jsonl"
    rows.write_text(rows.read_text()[:-40])  # epoch 2's row cut off
    (out / "checkpoints" / "last" / "manifest.json").write_text("[]")
    assert "is not a manifest" in checkpoint_problem(out / "checkpoints" / "last")
    (out / "checkpoints" / "last.tmp").write_text("not a folder")
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=3"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "line(s) [2] are not whole rows" in proc.stdout and "damaged checkpoint passed over" in proc.stdout
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3] and read_state(out / "checkpoints" / "last").epoch == 3


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["file_in_the_way", "lock_is_a_folder", "samples_is_a_file"])
def test_a_run_directory_that_cannot_be_written_is_named_in_one_line(reference, photo_folder, tmp_path, damage):
    """A new run under a file, or with `.lock` a folder; a resume whose `samples` became a file."""
    out, extra = tmp_path / "run", []
    if damage == "file_in_the_way":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    elif damage == "lock_is_a_folder":
        (out / ".lock").mkdir(parents=True)
    else:
        shutil.copytree(reference, out)
        shutil.rmtree(out / "samples")
        (out / "samples").write_text("x")
        extra = ["--resume=auto", "--epochs=3"]
    proc = srtrain(job(photo_folder, out, *extra), tmp_path, wandb="disabled")
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and ("output_dir" in line or "samples" in line) and "Traceback" not in line


@needs_data
@pytest.mark.slow
def test_one_run_one_directory(reference, photo_folder, tmp_path):
    """A new run refuses a directory holding another run; a second writer is locked out; a resume that would
    change what is trained is refused with the differences; the run's config.yaml is never rewritten."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    config = (out / "config.yaml").read_text()
    proc = srtrain(job(photo_folder, out), tmp_path, wandb="disabled")
    assert proc.returncode == 2 and "holds another run" in proc.stderr and "--resume=auto" in proc.stderr
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--batch_size=4", "--patch_size=32"), tmp_path)
    assert proc.returncode == 2
    assert "batch_size: 8 -> 4" in proc.stderr and "patch_size: 48 -> 32" in proc.stderr
    with open(out / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=3"), tmp_path, wandb="disabled")
    assert proc.returncode == 2 and "in use by another srtrain process" in proc.stderr
    assert (out / "config.yaml").read_text() == config
    assert [r["epoch"] for r in metrics(out)] == [1, 2]


def test_every_run_directory_name_comes_from_one_table():
    assert run_dir_name("new", model="edsr", scale=4, time="20261207-120000") == Path("runs/edsr_x4_20261207-120000")
    assert run_dir_name("slurm", job_name="srtrain", job_id=7) == Path("runs/srtrain-7")
    assert run_dir_name("sweep", sweep="grid", point=3) == Path("runs/grid/3")
    assert run_dir_name("agent", sweep_id="s1", run_id="r1") == Path("runs/sweep-s1/r1")


def test_the_run_directory_layout_is_named_in_one_place(tmp_path):
    run = RunDir(tmp_path)
    assert run.config == tmp_path / "config.yaml" and run.metrics == tmp_path / "metrics.jsonl"
    assert run.last == tmp_path / "checkpoints" / "last" and run.best == tmp_path / "checkpoints" / "best"
    assert run.samples == tmp_path / "samples" and run.stopped == tmp_path / "stopped.json"


def test_a_saved_configuration_reads_back_as_the_config_that_wrote_it(tmp_path):
    cfg = load_config(overrides={"model": "edsr", "model.n_blocks": "4", "scale": "3", "data.repeat": "2"})
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert saved_config(tmp_path / "config.yaml") == cfg


def test_a_saved_configuration_is_read_even_when_its_init_from_file_is_gone(tmp_path):
    """Read back as written: relations and paths were checked when the run started, not again."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    cfg = load_config(overrides={"init_from": str(weights)})
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    weights.unlink()
    assert saved_config(tmp_path / "config.yaml").init_from == str(weights)


def test_a_saved_configuration_with_a_key_this_version_does_not_know_names_the_file(tmp_path):
    (tmp_path / "config.yaml").write_text("scale: 4\nlearning_speed: 3\n")
    with pytest.raises(ConfigError, match=r"config.yaml: unknown config key 'learning_speed'"):
        saved_config(tmp_path / "config.yaml")

"""End to end: `accelerate launch srtrain/main.py` trains, logs to W&B (offline) and files, and resumes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest
import torch
import yaml
from conftest import DATA, ROOT, accelerate_launch, needs_data
from safetensors.torch import load_file

from srtrain.checkpoint import read_state
from srtrain.config import ConfigError, load_config
from srtrain.train import lr_at, train
from srtrain.visual import GAP, LABEL_HEIGHT

pytestmark = needs_data
LAUNCH = [*accelerate_launch(1), str(ROOT / "srtrain" / "main.py")]
METRIC_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "psnr_y",
    "ssim_y",
    "psnr_rgb",
    "lr",
    "epoch_time_s",
    "patches_per_s",
}


def tiny_job(train_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"--data.train={train_dir}",
        f"--data.val={DATA / 'Set5'}",
        "--data.max_val_images=2",
        "--data.repeat=8",
        "--batch_size=8",
        "--patch_size=48",
        "--lr=0.002",
        "--num_samples=2",
        "--scheduler=constant",
        f"--output_dir={out}",
        *extra,
    ]


def launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(LAUNCH + args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def wandb_summary(run_dir: Path) -> dict:
    proc = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(proc.stdout)


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of an offline W&B run's `.wandb` file, as W&B's own reader decodes it."""
    proc = subprocess.run(
        ["wandb", "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def wandb_history(run_dir: Path) -> list[dict]:
    return [r["history"]["item"] for r in wandb_records(run_dir) if r.get("type") == "history"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, photo_folder):
    """Two epochs straight through: the reference for the end-to-end and resume checks."""
    out = tmp_path_factory.mktemp("full") / "run"
    proc = launch(tiny_job(photo_folder, out, "--epochs=2"), out.parent)
    return out, proc


def test_end_to_end_files(full_run):
    out, proc = full_run
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r.keys() >= METRIC_KEYS for r in rows)
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert "final val PSNR-Y" in proc.stdout and "bicubic" in proc.stdout
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.002
    for name in ("last", "best"):
        ckpt = out / "checkpoints" / name
        weights = load_file(str(ckpt / "model.safetensors"))
        assert "body.0.weight" in weights
        state = torch.load(ckpt / "training_state.pt", weights_only=True)
        assert {"optimizer", "state"} <= state.keys()
    assert torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)["state"]["epoch"] == 2
    grid = PIL.Image.open(out / "samples" / "epoch_0002.png")
    # LR | bicubic | SR | HR over a row of crops, each panel under a label: baby (512^2) above bird (288^2)
    assert grid.size == (4 * 512 + 3 * GAP, 2 * (512 + LABEL_HEIGHT) + GAP + GAP + 2 * (288 + LABEL_HEIGHT) + GAP)
    assert not list(out.parent.glob("runs"))  # nothing written outside --output_dir


def test_wandb_offline_run_read_back(full_run):
    out, proc = full_run
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    summary = wandb_summary(run_dir)
    rows = metrics(out)
    assert summary["state"] == "finished" and summary["project"] == "srtrain"
    assert summary["config"]["lr"] == 0.002 and summary["config"]["model"]["name"] == "espcn"
    assert summary["summary"]["best_psnr_y"] == pytest.approx(max(r["psnr_y"] for r in rows))
    history = wandb_history(run_dir)
    assert [h["_step"] for h in history] == list(range(1, 9))  # one row per optimizer step: 4 per epoch
    assert all("train/loss" in h and "train/lr" in h for h in history)
    epochs = [h for h in history if "psnr_y" in h]  # epoch metrics on the same step axis, `epoch` a metric
    assert [(h["epoch"], h["_step"]) for h in epochs] == [(1, 4), (2, 8)]
    assert [h["psnr_y"] for h in epochs] == pytest.approx([r["psnr_y"] for r in rows])
    assert all(h["samples._type"] == "image-file" for h in epochs)
    assert len(list((run_dir / "files" / "media" / "images").glob("*.png"))) == 2
    assert "wandb sync" in proc.stdout


def test_resume_continues_exactly(full_run, photo_folder, tmp_path):
    """Stop after epoch 1, resume to 2: identical to the straight run (constant LR, so that the first
    segment's schedule does not depend on its shorter `--epochs`)."""
    reference, _ = full_run
    out = tmp_path / "run"
    launch(tiny_job(photo_folder, out, "--epochs=1"), tmp_path)
    proc = launch(tiny_job(photo_folder, out, "--epochs=2", "--resume=auto"), tmp_path)
    assert "resuming at step" in proc.stdout and "(epoch 2, batch 0) from" in proc.stdout
    rows, ref_rows = metrics(out), metrics(reference)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "psnr_y", "lr"):
        assert rows[1][key] == pytest.approx(ref_rows[1][key], rel=1e-5), key
    resumed = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    straight = load_file(str(reference / "checkpoints" / "last" / "model.safetensors"))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6)
    ids = {p.name.rsplit("-", 1)[1] for p in (out / "wandb").glob("offline-run-*")}
    assert len(ids) == 1  # the resumed segment logs to the same W&B run id


def test_nan_loss_stops_with_a_clear_error(photo_folder, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        LAUNCH + tiny_job(photo_folder, tmp_path / "run", "--epochs=1", "--lr=1e20", "--loss=mse"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "lower --lr" in proc.stderr + proc.stdout
    assert "--mixed_precision=no" not in proc.stderr  # already so: nothing to suggest


def test_a_run_that_diverges_with_a_finite_loss_stops_before_it_is_kept(photo_folder, tmp_path):
    """L1 with lr 1e3: the loss grows by orders of magnitude but stays finite. The run stops at once, status 1, one
    line naming the step, the cause and the fix; no such model is validated or kept as `best`."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "srtrain", *tiny_job(photo_folder, out, "--epochs=2", "--lr=1e3")]
    env = {**os.environ, "WANDB_MODE": "disabled"}  # (W&B's own lines go to stderr too)
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert re.fullmatch(r"error: training diverged at step 2 \(epoch 1\): the loss is .* times its lowest .*", line)
    assert "lower --lr (now 1000.0) or set --grad_clip; no checkpoint was written yet" in line
    assert not (out / "checkpoints" / "best").exists() and not (out / "metrics.jsonl").exists()


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        train(load_config(overrides={"mixed_precision": "fp16"}))


def test_schedule_warmup_then_cosine_or_steps():
    cfg = load_config(overrides={"lr": 0.01, "min_lr": 0.001, "warmup": 0.25})
    lrs = [lr_at(cfg, p / 100) for p in range(101)]
    assert lrs[0] == 0 and lrs[25] == pytest.approx(0.01) and lrs[100] == pytest.approx(0.001)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26], strict=True))
    assert all(a >= b for a, b in zip(lrs[25:-1], lrs[26:], strict=True))
    steps = load_config(overrides={"lr": 0.01, "scheduler": "step", "step_every": 0.5, "gamma": 0.1})
    assert [lr_at(steps, p) for p in (0, 0.49, 0.5, 0.99, 1.0)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4])


def test_gradient_accumulation_schedule_ends_with_the_last_step(photo_folder, tmp_path):
    """4 batches an epoch with grad_accum=3: accelerate steps after batches 3 and 4, so 2 steps an epoch and the
    cosine reaches min_lr at the last step of the run, not half-way (as it did with 4 // 3 = 1 step an epoch)."""
    out = tmp_path / "run"
    job = tiny_job(photo_folder, out, "--epochs=2", "--grad_accum=3", "--scheduler=cosine", "--min_lr=1e-5")
    proc = launch(job, tmp_path)
    assert ", 4 steps," in " ".join(proc.stdout.split())
    first, last = metrics(out)
    assert first["lr"] == pytest.approx((0.002 + 1e-5) / 2) and last["lr"] == pytest.approx(1e-5)
    assert read_state(out / "checkpoints" / "last").step == 4


def test_time_budget_stops_training(photo_folder, tmp_path):
    out = tmp_path / "run"
    launch(tiny_job(photo_folder, out, "--epochs=10000", "--time_budget_min=0.05", "--val_every=1000"), tmp_path)
    (row,) = metrics(out)  # validated once, when the budget ran out
    assert row["epoch"] < 10000 and row["train_minutes"] >= 0.05


def eval_on_tiny_val(out: Path, tmp_path: Path) -> dict:
    """`srtrain eval` of run `out`'s best checkpoint on the tiny job's two validation images (max_val_images=2)."""
    val = tmp_path / "val"
    val.mkdir()
    for name in ("baby", "bird"):
        (val / f"{name}.png").write_bytes((DATA / "Set5" / f"{name}.png").read_bytes())
    report = tmp_path / "eval.json"
    subprocess.run(
        ["srtrain", "eval", "--checkpoint", str(out), "--data", str(val), "--json", str(report)],
        check=True,
        timeout=300,
    )
    (result,) = json.loads(report.read_text())["results"]
    return result


def test_eval_of_the_best_checkpoint_reproduces_the_logged_score(full_run, tmp_path):
    """Training validation and `srtrain eval` share one code path: same weights, same images, same PSNR-Y."""
    out, _ = full_run
    result = eval_on_tiny_val(out, tmp_path)
    best = max(metrics(out), key=lambda r: r["psnr_y"])
    assert result["psnr_y"] == pytest.approx(best["psnr_y"], abs=1e-9)
    assert result["ssim_y"] == pytest.approx(best["ssim_y"], abs=1e-9)


def test_bf16_run_validates_in_fp32_like_eval_and_says_which_precision_wins(photo_folder, tmp_path):
    """One source of truth: the job's mixed_precision beats the launcher's, and says so; bf16 is for training
    steps only, so the logged validation score is the one `srtrain eval` (float32) gives for the checkpoint."""
    out = tmp_path / "run"
    launcher = [*accelerate_launch(1), str(ROOT / "srtrain" / "main.py")]
    launcher[launcher.index("--mixed_precision") + 1] = "fp16"
    env = {**os.environ, "WANDB_MODE": "offline"}
    job = tiny_job(photo_folder, out, "--epochs=1", "--mixed_precision=bf16")
    proc = subprocess.run(launcher + job, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--mixed_precision=fp16 is ignored: the job's mixed_precision=bf16 decides" in " ".join(proc.stdout.split())
    assert yaml.safe_load((out / "config.yaml").read_text())["mixed_precision"] == "bf16"
    result = eval_on_tiny_val(out, tmp_path)
    (logged,) = metrics(out)
    assert result["psnr_y"] == pytest.approx(logged["psnr_y"], abs=1e-9)
    assert result["ssim_y"] == pytest.approx(logged["ssim_y"], abs=1e-9)

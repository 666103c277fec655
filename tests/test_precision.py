"""Mixed precision (srtrain/precision.py): which precision a job trains in, what bf16 changes (the training steps)
and what it does not (validation and `srtrain eval` in float32), and fp16 refused where it would silently be fp32."""

import os
import subprocess

import pytest
import torch
import yaml
from helpers import MAIN, accelerate_launch, eval_on_tiny_val, metrics, needs_data, tiny_job

from srtrain.config import ConfigError, load_config
from srtrain.precision import autocast, checked_precision, launcher_disagrees
from srtrain.train import train


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is a GPU")
def test_fp16_on_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        train(load_config(overrides={"mixed_precision": "fp16"}))


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, photo_folder):
    """`full_run`'s job in bf16 (the job's mixed_precision), under a launcher told fp16: (its run directory, the
    finished process). On the CPU, as `full_run`."""
    root = tmp_path_factory.mktemp("bf16")
    out = root / "run"
    launcher = [*accelerate_launch(1), MAIN]
    launcher[launcher.index("--mixed_precision") + 1] = "fp16"
    env = {**os.environ, "WANDB_MODE": "offline", "ACCELERATE_USE_CPU": "1"}
    job = tiny_job(photo_folder, out, "--epochs=2", "--mixed_precision=bf16")
    proc = subprocess.run(launcher + job, capture_output=True, text=True, cwd=root, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
@needs_data
def test_bf16_learns_like_fp32(full_run, bf16_run):
    rows = {"no": metrics(full_run[0]), "bf16": metrics(bf16_run[0])}
    for precision, r in rows.items():
        assert r[-1]["train_loss"] < r[0]["train_loss"], precision
    assert abs(rows["bf16"][-1]["psnr_y"] - rows["no"][-1]["psnr_y"]) < 0.5  # dB; bf16 has an 8-bit mantissa


@pytest.mark.slow
@needs_data
def test_bf16_run_validates_in_fp32_like_eval_and_says_which_precision_wins(bf16_run, tmp_path):
    """One source of truth: the job's mixed_precision beats the launcher's, and says so; bf16 is for training
    steps only, so the logged validation score is the one `srtrain eval` (float32) gives for the checkpoint."""
    out, proc = bf16_run
    assert "--mixed_precision=fp16 is ignored: the job's mixed_precision=bf16 decides" in " ".join(proc.stdout.split())
    assert yaml.safe_load((out / "config.yaml").read_text())["mixed_precision"] == "bf16"
    result = eval_on_tiny_val(out, tmp_path, CUDA_VISIBLE_DEVICES="")  # where it trained
    logged = max(metrics(out), key=lambda r: r["psnr_y"])  # the best checkpoint's epoch
    assert result["psnr_y"] == pytest.approx(logged["psnr_y"], abs=1e-9)
    assert result["ssim_y"] == pytest.approx(logged["ssim_y"], abs=1e-9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is a GPU")
def test_fp16_is_refused_on_a_cpu_naming_the_alternative():
    with pytest.raises(ConfigError, match="fp16 needs a GPU; on CPU use --mixed_precision=bf16 or no"):
        checked_precision("fp16")


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ConfigError, match="choose one of no, bf16, fp16"):
        checked_precision("fp8")


def test_autocast_runs_inference_in_the_precision_asked_for():
    x, w = torch.rand(4, 4), torch.rand(4, 4)
    with autocast("no", torch.device("cpu")):
        assert (x @ w).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert (x @ w).dtype == torch.bfloat16


def test_the_launchers_precision_is_ignored_and_said_so_only_when_it_differs(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert "--mixed_precision=fp16 is ignored: the job's mixed_precision=bf16 decides" in launcher_disagrees("bf16")
    assert launcher_disagrees("fp16") == ""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert launcher_disagrees("bf16") == ""

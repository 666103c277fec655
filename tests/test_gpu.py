"""On a CUDA device: training in fp32, bf16, fp16 (loss scaling) and bf16 compiled, eval and degradation equal to
the CPU's.

Skipped without CUDA. On a GPU machine, from a plain checkout: `PYTHONPATH=. python -m pytest -q -m gpu`.
The data are the photographs bundled with scikit-image (the `default` source), so ../shared need not exist.
"""

import json
import os

import PIL.Image
import pytest
import torch
from helpers import MAIN, launch, python
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from srtrain.config import DataConfig
from srtrain.data import TrainPatches, load_images, training_pair
from srtrain.models import build_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def job(out, *extra: str) -> list[str]:
    return [
        MAIN,
        "--data.train=default",
        "--data.val=default",
        "--data.repeat=24",
        "--batch_size=16",
        "--patch_size=96",
        "--model=espcn",
        "--lr=0.002",
        "--epochs=2",
        "--num_samples=1",
        "--scheduler=constant",
        f"--output_dir={out}",
        *extra,
    ]


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
def test_training_on_cuda(precision, tmp_path):
    out = tmp_path / "run"
    proc = launch(job(out, f"--mixed_precision={precision}"), tmp_path)
    assert "on cuda" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["psnr_y"] > 20
    scaler = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=False)["scaler"]
    if precision == "fp16":  # loss scaling on: the scaler's state is saved, its scale a power of two
        assert scaler is not None and scaler["scale"] > 1
    else:
        assert scaler is None


def test_compiled_bf16_training_on_cuda(tmp_path):
    """`compile: true` on CUDA (inductor with triton) in bf16: it trains and saves plain weights."""
    out = tmp_path / "run"
    proc = launch(job(out, "--mixed_precision=bf16", "--compile=true"), tmp_path)
    assert "on cuda" in proc.stdout and "torch.compile: the training forward compiles" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["psnr_y"] > 20
    weights = load_file(out / "checkpoints" / "last" / "model.safetensors")
    assert weights.keys() == build_model("espcn", 4).state_dict().keys()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_train_in_sync(tmp_path):
    out = tmp_path / "run"
    proc = launch(job(out, "--mixed_precision=bf16"), tmp_path, 2)
    assert "weights identical on all 2 processes" in proc.stdout


def test_eval_on_cuda_equals_cpu(tmp_path):
    images = load_images(DataConfig(), "val")
    for i in range(len(images)):
        PIL.Image.fromarray(images.hr(i).permute(1, 2, 0).numpy()).save(tmp_path / f"{images.name(i)}.png")
    torch.manual_seed(0)
    weights = tmp_path / "espcn.safetensors"
    save_file(build_model("espcn", 4).state_dict(), str(weights))
    results = {}
    for device, visible in (("cuda", os.environ.get("CUDA_VISIBLE_DEVICES", "0")), ("cpu", "")):
        report = tmp_path / f"{device}.json"
        cmd = ["-m", "srtrain", "eval", "--model", "espcn", "--weights", str(weights), "--scale", "4"]
        cmd += ["--data", str(tmp_path), "--json", str(report)]
        python(cmd, tmp_path, WANDB_MODE="offline", CUDA_VISIBLE_DEVICES=visible)
        results[device] = json.loads(report.read_text())["results"][0]["per_image"]
    for gpu, cpu in zip(results["cuda"], results["cpu"], strict=True):
        assert gpu["name"] == cpu["name"]
        assert gpu["psnr_y"] == pytest.approx(cpu["psnr_y"], abs=0.01), gpu["name"]
        assert gpu["ssim_y"] == pytest.approx(cpu["ssim_y"], abs=1e-4), gpu["name"]


def test_batched_degradation_on_cuda_equals_cpu():
    patches = TrainPatches(load_images(DataConfig(), "train"), 4, 96, 4, seed=0)
    batch = next(iter(DataLoader(patches, batch_size=32)))
    cpu = training_pair(batch, 4)
    gpu = training_pair({k: v.cuda() for k, v in batch.items()}, 4)
    # uint8 -> float differs by one float32 ulp between the devices (measured on an H100: 5.96e-8 for HR,
    # 2.4e-7 for LR), so "equal" here means within 1e-6, far below one uint8 level (3.9e-3).
    assert torch.allclose(gpu["hr"].cpu(), cpu["hr"], atol=1e-6, rtol=0)
    assert torch.allclose(gpu["lr"].cpu(), cpu["lr"], atol=1e-6, rtol=0)

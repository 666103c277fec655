"""`compile: true`: a torch.compile'd training forward trains in bf16, resumes, saves plain weights that
`srtrain eval` scores as logged; without a working C++ compiler the run stops before training with one line."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, needs_data
from safetensors.torch import load_file
from test_train import eval_on_tiny_val, launch, metrics, tiny_job

from srtrain.models import build_model

pytestmark = needs_data  # every test trains on the Set5 crops of `photo_folder`


def test_compiled_bf16_run_resumes_and_saves_plain_weights_that_eval_scores_as_logged(photo_folder, tmp_path):
    out = tmp_path / "run"
    job = tiny_job(photo_folder, out, "--compile=true", "--mixed_precision=bf16", "--num_samples=0")
    first = launch([*job, "--epochs=1"], tmp_path)
    assert "torch.compile: the training forward compiles" in first.stdout
    launch([*job, "--epochs=2", "--resume=auto"], tmp_path)
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["train_loss"] < rows[0]["train_loss"]
    weights = load_file(out / "checkpoints" / "last" / "model.safetensors")
    assert weights.keys() == build_model("espcn", 4).state_dict().keys()  # no `_orig_mod.` prefixes
    result = eval_on_tiny_val(out, tmp_path)  # validation ran the eager float32 module, as eval does
    best = max(rows, key=lambda r: r["psnr_y"])
    assert result["psnr_y"] == pytest.approx(best["psnr_y"], abs=1e-9)


def test_compile_without_a_compiler_stops_before_training(photo_folder, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "CXX": str(tmp_path / "no-such-g++")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")  # a cold cache: nothing compiled to reuse
    cmd = [sys.executable, str(ROOT / "srtrain" / "main.py"), *tiny_job(photo_folder, out, "--compile=true")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    message = " ".join(proc.stderr.split())
    assert "compile: true, but torch.compile fails on cpu" in message and "set --compile=false" in message
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()

"""Multi-process training, for real: 2 CPU processes with gloo, as CUDA/NCCL runs it on a cluster.

Gradient sync (2 processes x batch 4 == 1 process x batch 8), one writer, checkpoints that load across
world sizes, the launch guard, bf16 against fp32, and run-to-run determinism.
"""

import json
import os
import subprocess

import pytest
import torch
from conftest import DATA, ROOT, accelerate_launch, needs_data
from safetensors.torch import load_file
from test_train import metrics, tiny_job, wandb_records

pytestmark = needs_data
MAIN = str(ROOT / "srtrain" / "main.py")


def run(args: list[str], processes: int, cwd, check: bool = True, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", "ACCELERATE_USE_CPU": "1", **env}
    proc = subprocess.run(
        [*accelerate_launch(processes), *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last" / "model.safetensors"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory, photo_folder):
    """The same job on 1 process (batch 8) and on 2 processes (batch 4 each): the same global batch."""
    root = tmp_path_factory.mktemp("pair")
    photos = photo_folder
    runs = {}
    for processes, batch in ((1, 8), (2, 4)):
        out = root / f"p{processes}"
        job = tiny_job(photos, out, "--epochs=2", f"--batch_size={batch}", "--data.repeat=8")
        runs[processes] = (out, run([MAIN, *job], processes, root))
    return photos, runs


def test_two_processes_train_like_one_with_the_same_global_batch(pair):
    _, runs = pair
    (one, _), (two, proc) = runs[1], runs[2]
    assert "2 process(es)" in proc.stdout and "= 8 global" in proc.stdout
    assert "weights identical on all 2 processes" in proc.stdout
    w1, w2 = weights(one), weights(two)
    # Float tolerance: summation order differs (two half-batch means averaged vs one mean), and Adam's
    # normalised step magnifies that where a gradient is near 0; 1 % of one step (lr 0.002) bounds it.
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=2e-5)
    for r1, r2 in zip(metrics(one), metrics(two), strict=True):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-5)


def test_only_the_main_process_writes(pair):
    _, runs = pair
    out, _ = runs[2]
    written = {"config.yaml", "metrics.jsonl", "samples", "checkpoints", "wandb", ".lock"}
    assert {p.name for p in out.iterdir()} == written
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"last", "last.old", "best"}
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    assert len(list((out / "samples").iterdir())) == 2
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    records = wandb_records(wandb_run)  # finished before the process ended (srtrain.launch.end_process)
    rows = [r["history"]["item"] for r in records if r.get("type") == "history"]
    assert [h["epoch"] for h in rows if "psnr_y" in h] == [1, 2]
    assert [r["exit"]["exit_code"] for r in records if r.get("type") == "exit"] == [0]


def test_validation_on_two_processes_equals_one(pair, tmp_path):
    _, runs = pair
    out, _ = runs[2]
    val = ["--data", str(DATA / "Set5"), "--json"]
    for processes in (1, 2):
        run(
            ["-m", "srtrain", "eval", "--checkpoint", str(out), *val, str(tmp_path / f"{processes}.json")],
            processes,
            tmp_path,
        )
    one, two = (json.loads((tmp_path / f"{n}.json").read_text())["results"][0] for n in (1, 2))
    assert two["n_images"] == one["n_images"] == 5
    for key in ("psnr_y", "ssim_y", "psnr_rgb"):
        assert two[key] == pytest.approx(one[key], abs=1e-6)


@pytest.mark.parametrize(("saved_by", "resumed_by"), [(2, 1), (1, 2)])
def test_checkpoints_load_across_world_sizes(pair, tmp_path, saved_by, resumed_by):
    photos, runs = pair
    source, _ = runs[saved_by]
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(source / "checkpoints" / "last"), str(out / "checkpoints")], check=True)
    batch = 8 // resumed_by
    job = tiny_job(photos, out, "--epochs=3", f"--batch_size={batch}", "--data.repeat=8", "--resume=auto")
    proc = run([MAIN, *job], resumed_by, tmp_path)
    assert "resuming at step" in proc.stdout and "(epoch 3, batch 0) from" in proc.stdout
    assert [r["epoch"] for r in metrics(out)] == [2, 3]  # the folder had no metrics.jsonl: epoch 2's row restored


def test_a_launch_that_would_run_copies_is_refused(tmp_path, photo_folder):
    proc = subprocess.run(
        ["python", MAIN, *tiny_job(photo_folder, tmp_path / "run", "--epochs=1")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "WORLD_SIZE": "2"},
        timeout=120,
    )
    assert proc.returncode == 2 and "accelerate launch --multi_gpu --num_processes N" in proc.stderr
    # Without ACCELERATE_USE_CPU a CPU-only `--multi_gpu` launch starts two independent copies (see
    # ../shared/notes/platform-facts.md): the guard must stop each of them.
    script = tmp_path / "guard.py"
    script.write_text(
        "from accelerate import Accelerator\nfrom srtrain.launch import check_launch\ncheck_launch(Accelerator())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    proc = subprocess.run(
        [*accelerate_launch(2), str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode != 0 and "WORLD_SIZE=2 but accelerate sees 1 process" in proc.stderr


def test_bf16_learns_like_fp32(photo_folder, tmp_path):
    rows = {}
    for precision in ("no", "bf16"):
        out = tmp_path / precision
        run([MAIN, *tiny_job(photo_folder, out, "--epochs=3", f"--mixed_precision={precision}")], 1, tmp_path)
        rows[precision] = metrics(out)
    for precision, r in rows.items():
        assert r[-1]["train_loss"] < r[0]["train_loss"], precision
    assert abs(rows["bf16"][-1]["psnr_y"] - rows["no"][-1]["psnr_y"]) < 0.5  # dB; bf16 has an 8-bit mantissa


def test_same_seed_same_loss_curve(photo_folder, tmp_path):
    curves = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        run([MAIN, *tiny_job(photo_folder, out, "--epochs=2", "--seed=7")], 1, tmp_path)
        curves.append([(r["train_loss"], r["val_loss"], r["psnr_y"]) for r in metrics(out)])
    assert curves[0] == curves[1]

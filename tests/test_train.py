"""srtrain/train.py, the training loop, end to end: what a run writes, its learning-rate schedule, an exact resume,
gradient accumulation, `compile: true`, and the stops that end a run before a bad model is kept (NaN, divergence,
an image that breaks)."""

import re
import signal

import PIL.Image
import pytest
import torch
import yaml
from helpers import (
    DATA,
    MAIN,
    assert_identical,
    checkpointed_job,
    eval_on_tiny_val,
    launch,
    metrics,
    needs_data,
    paused_srtrain,
    photo,
    png_bytes,
    python,
    srtrain,
    tiny_job,
)
from safetensors.torch import load_file

from srtrain.checkpoint import checkpoint_problem, read_state
from srtrain.config import load_config
from srtrain.faults import READY_FILE
from srtrain.models import build_model
from srtrain.train import lr_at
from srtrain.visual import GAP, LABEL_HEIGHT

pytestmark = needs_data
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
CPU = {"ACCELERATE_USE_CPU": "1"}  # as `full_run`, also where there is a GPU


def test_schedule_warmup_then_cosine_or_steps():
    cfg = load_config(overrides={"lr": 0.01, "min_lr": 0.001, "warmup": 0.25})
    lrs = [lr_at(cfg, p / 100) for p in range(101)]
    assert lrs[0] == 0 and lrs[25] == pytest.approx(0.01) and lrs[100] == pytest.approx(0.001)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26], strict=True))
    assert all(a >= b for a, b in zip(lrs[25:-1], lrs[26:], strict=True))
    steps = load_config(overrides={"lr": 0.01, "scheduler": "step", "step_every": 0.5, "gamma": 0.1})
    assert [lr_at(steps, p) for p in (0, 0.49, 0.5, 0.99, 1.0)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4])


@pytest.mark.slow
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


@pytest.mark.slow
def test_resume_continues_exactly(full_run, photo_folder, tmp_path):
    """Stop after epoch 1, resume to 2: identical to the straight run (constant LR, so that the first
    segment's schedule does not depend on its shorter `--epochs`)."""
    reference, _ = full_run
    out = tmp_path / "run"
    srtrain(tiny_job(photo_folder, out, "--epochs=1"), tmp_path, check=True, **CPU)
    proc = srtrain(tiny_job(photo_folder, out, "--epochs=2", "--resume=auto"), tmp_path, check=True, **CPU)
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


@pytest.mark.slow
def test_same_seed_same_loss_curve(full_run, photo_folder, tmp_path):
    """`full_run`'s job again (the same seed): the same losses and scores, epoch by epoch, to the last bit."""
    reference, _ = full_run
    out = tmp_path / "again"
    launch([MAIN, *tiny_job(photo_folder, out, "--epochs=2")], tmp_path, **CPU)
    curves = [[(r["train_loss"], r["val_loss"], r["psnr_y"]) for r in metrics(run)] for run in (reference, out)]
    assert curves[0] == curves[1]


@pytest.mark.slow
def test_eval_of_the_best_checkpoint_reproduces_the_logged_score(full_run, tmp_path):
    """Training validation and `srtrain eval` share one code path: same weights, same images, same PSNR-Y."""
    out, _ = full_run
    result = eval_on_tiny_val(out, tmp_path, CUDA_VISIBLE_DEVICES="")  # where it trained
    best = max(metrics(out), key=lambda r: r["psnr_y"])
    assert result["psnr_y"] == pytest.approx(best["psnr_y"], abs=1e-9)
    assert result["ssim_y"] == pytest.approx(best["ssim_y"], abs=1e-9)


@pytest.mark.slow
def test_val_ensemble_validates_the_self_ensemble_as_eval_ensemble_scores_it(photo_folder, tmp_path):
    out = tmp_path / "run"
    srtrain(tiny_job(photo_folder, out, "--epochs=1", "--val_ensemble=true"), tmp_path, check=True)
    (logged,) = metrics(out)
    (tmp_path / "ensemble").mkdir()
    (tmp_path / "plain").mkdir()
    ensemble = eval_on_tiny_val(out, tmp_path / "ensemble", "--ensemble")
    plain = eval_on_tiny_val(out, tmp_path / "plain")
    assert ensemble["psnr_y"] == pytest.approx(logged["psnr_y"], abs=1e-9)
    assert ensemble["ssim_y"] == pytest.approx(logged["ssim_y"], abs=1e-9)
    assert abs(plain["psnr_y"] - logged["psnr_y"]) > 0.01  # the logged figure is not the plain model's


@pytest.fixture(scope="module")
def accumulated(tmp_path_factory, photo_folder):
    """`checkpointed_job` with grad_accum=3 (4 batches an epoch: optimizer steps after batches 3 and 4), straight
    through: (its run directory, the finished process)."""
    root = tmp_path_factory.mktemp("accumulated")
    out = root / "straight"
    proc = srtrain(checkpointed_job(photo_folder, out, "--grad_accum=3"), root, wandb="disabled", check=True)
    return out, proc


@pytest.mark.slow
def test_gradient_accumulation_schedule_ends_with_the_last_step(accumulated):
    """4 batches an epoch with grad_accum=3: accelerate steps after batches 3 and 4, so 2 steps an epoch and the
    cosine reaches min_lr at the last step of the run, not half-way (as it did with 4 // 3 = 1 step an epoch)."""
    out, proc = accumulated
    assert ", 4 steps," in " ".join(proc.stdout.split())
    first, last = metrics(out)
    assert first["lr"] == pytest.approx((0.002 + 1e-4) / 2) and last["lr"] == pytest.approx(1e-4)
    assert read_state(out / "checkpoints" / "last").step == 4


@pytest.mark.slow
def test_gradient_accumulation_resumes_mid_epoch_exactly(accumulated, photo_folder, tmp_path):
    """grad_accum=3 over 4 batches an epoch: optimizer steps after batches 3 and 4. Killed with 3 batches of epoch 1
    done (after step 1's checkpoint) and again in epoch 2, the resumed run ends as the straight one, bit for bit."""
    accumulate = "--grad_accum=3"
    straight, _ = accumulated
    out = tmp_path / "run"
    for i, fault in enumerate(("kill:step:2", "kill:step:4")):
        args = checkpointed_job(photo_folder, out, accumulate, *(["--resume=auto"] if i else []))
        assert srtrain(args, tmp_path, fault, wandb="disabled").returncode == -signal.SIGKILL, fault
    proc = srtrain(checkpointed_job(photo_folder, out, accumulate, "--resume=auto"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, straight)
    assert [(r["step"], r["lr"]) for r in metrics(out)] == [(r["step"], r["lr"]) for r in metrics(straight)]


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_error(photo_folder, tmp_path):
    args = tiny_job(photo_folder, tmp_path / "run", "--epochs=1", "--lr=1e20", "--loss=mse")
    proc = srtrain(args, tmp_path, wandb="disabled")
    assert proc.returncode != 0
    assert "lower --lr" in proc.stderr + proc.stdout
    assert "--mixed_precision=no" not in proc.stderr  # already so: nothing to suggest


@pytest.mark.slow
def test_nan_policy_skip_counts_then_stops(photo_folder, tmp_path):
    proc = srtrain(
        checkpointed_job(
            photo_folder, tmp_path / "run", "--lr=1e20", "--loss=mse", "--nan_policy=skip", "--nan_max_skips=2"
        ),
        tmp_path,
        wandb="disabled",
    )
    assert proc.returncode == 1
    assert "3 steps in a row" in proc.stderr and "last good checkpoint" in proc.stderr


@pytest.mark.slow
def test_a_run_that_diverges_with_a_finite_loss_stops_before_it_is_kept(photo_folder, tmp_path):
    """L1 with lr 1e3: the loss grows by orders of magnitude but stays finite. The run stops at once, status 1, one
    line naming the step, the cause and the fix; no such model is validated or kept as `best`."""
    out = tmp_path / "run"
    # (W&B's own lines go to stderr too)
    proc = srtrain(tiny_job(photo_folder, out, "--epochs=2", "--lr=1e3"), tmp_path, wandb="disabled")
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert re.fullmatch(r"error: training diverged at step 2 \(epoch 1\): the loss is .* times its lowest .*", line)
    assert "lower --lr (now 1000.0) or set --grad_clip; no checkpoint was written yet" in line
    assert not (out / "checkpoints" / "best").exists() and not (out / "metrics.jsonl").exists()


@pytest.mark.slow
def test_an_image_that_breaks_during_training_stops_with_one_line_and_resumes(photo_copy, tmp_path):
    """With loader workers and no cache: an image truncated on disk after the scan (while the fault hook pauses
    the run at epoch 1's last step) stops the run in epoch 2 with exit 2 and one line naming the file and the fix,
    not a worker's traceback; the last checkpoint stays intact, and once the file is replaced the run resumes."""
    folder = photo_copy
    photo().save(folder / "later.png")
    good = (folder / "later.png").read_bytes()
    out = tmp_path / "run"
    args = [f"--data.train={folder}", f"--data.val={DATA / 'Set5'}",
            "--data.max_val_images=1", "--data.num_workers=2", "--data.cache=false", "--data.repeat=2",
            "--batch_size=4", "--patch_size=48", "--epochs=2", "--checkpoint_every=1", f"--output_dir={out}",
            "--wandb.mode=disabled"]  # fmt: skip
    trainer = paused_srtrain(args, tmp_path, "pause:step:2", "disabled")
    (folder / "later.png").write_bytes(good[:-300])
    (tmp_path / READY_FILE).unlink()  # the run goes on
    _, stderr = trainer.communicate(timeout=300)
    assert trainer.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr and "worker" not in stderr
    (line,) = [line for line in stderr.splitlines() if "later.png" in line]
    assert line.startswith("error: image 'later.png'") and "srtrain check-data" in line
    assert "data.skip_bad=true" in line and "--resume=auto" in line
    last = out / "checkpoints" / "last"
    assert checkpoint_problem(last) == "" and read_state(last).epoch == 1
    (folder / "later.png").write_bytes(good)
    srtrain([*args, "--resume=auto"], tmp_path, wandb="disabled", check=True)
    assert read_state(last).epoch == 2


@pytest.mark.slow
def test_a_truncated_training_image_stops_the_job_before_training(photo_copy, tmp_path):
    folder = photo_copy
    (folder / "truncated.png").write_bytes(png_bytes()[:-200])
    out = tmp_path / "run"
    args = [f"--data.train={folder}", f"--data.val={DATA / 'Set5'}", "--epochs=1", "--data.num_workers=2",
            "--patch_size=48", f"--output_dir={out}", "--wandb.mode=disabled"]  # fmt: skip
    proc = srtrain(args, tmp_path, wandb="disabled")
    assert proc.returncode == 2 and "truncated.png" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()  # a start that fails its checks leaves no run directory behind
    skip = ["--data.skip_bad=true", "--data.max_bad_fraction=0.5", "--data.repeat=4", "--batch_size=8"]
    proc = srtrain([*args, *skip], tmp_path, wandb="disabled", check=True)
    assert "skipped bad image 1/1" in proc.stdout and "truncated.png" in proc.stdout


# `compile: true`: a torch.compile'd training forward trains in bf16, resumes, saves plain weights that
# `srtrain eval` scores as logged; without a working C++ compiler the run stops before training with one line.


@pytest.mark.slow
def test_compiled_bf16_run_resumes_and_saves_plain_weights_that_eval_scores_as_logged(photo_folder, tmp_path):
    out = tmp_path / "run"
    job = tiny_job(photo_folder, out, "--compile=true", "--mixed_precision=bf16", "--num_samples=0")
    first = srtrain([*job, "--epochs=1"], tmp_path, check=True)
    assert "torch.compile: the training forward compiles" in first.stdout
    srtrain([*job, "--epochs=2", "--resume=auto"], tmp_path, check=True)
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["train_loss"] < rows[0]["train_loss"]
    weights = load_file(out / "checkpoints" / "last" / "model.safetensors")
    assert weights.keys() == build_model("espcn", 4).state_dict().keys()  # no `_orig_mod.` prefixes
    result = eval_on_tiny_val(out, tmp_path)  # validation ran the eager float32 module, as eval does
    best = max(rows, key=lambda r: r["psnr_y"])
    assert result["psnr_y"] == pytest.approx(best["psnr_y"], abs=1e-9)


@pytest.mark.slow
def test_compile_mode_reduce_overhead_trains_on_cpu(photo_folder, tmp_path):
    """CUDA graphs apply on CUDA only: on a CPU `reduce-overhead` compiles as `default` does, and trains."""
    out = tmp_path / "run"
    job = tiny_job(photo_folder, out, "--compile=true", "--compile_mode=reduce-overhead", "--num_samples=0")
    srtrain([*job, "--epochs=1"], tmp_path, check=True)
    assert [r["epoch"] for r in metrics(out)] == [1]
    assert yaml.safe_load((out / "config.yaml").read_text())["compile_mode"] == "reduce-overhead"


@pytest.mark.slow
def test_compile_without_a_compiler_stops_before_training(photo_folder, tmp_path):
    out = tmp_path / "run"
    env = {"WANDB_MODE": "offline", "CXX": str(tmp_path / "no-such-g++")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")  # a cold cache: nothing compiled to reuse
    proc = python([MAIN, *tiny_job(photo_folder, out, "--compile=true")], check=False, **env)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    message = " ".join(proc.stderr.split())
    assert "compile: true, but torch.compile fails on cpu" in message and "set --compile=false" in message
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()

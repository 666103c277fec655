"""`srtrain eval`: the published bicubic tables to 0.02 dB, folder pairs, tiling, sharding, checkpoints."""

import json
import os
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from conftest import DATA, accelerate_launch, needs_data

from srtrain.checkpoint import TrainState, save_checkpoint
from srtrain.cli import main
from srtrain.config import DataConfig
from srtrain.data import ValImages, load_images
from srtrain.evaluation import evaluate_source, super_resolve
from srtrain.models import build_model

pytestmark = needs_data

# ../shared/data/README.md: published bicubic PSNR-Y / SSIM-Y (Set14 with its gray image used directly).
PUBLISHED = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


@pytest.mark.parametrize(("dataset", "scale"), sorted(PUBLISHED))
def test_bicubic_matches_published_tables(dataset, scale, accelerator):
    data = DataConfig(val=str(DATA / dataset), gray="direct")
    result = evaluate_source(build_model("bicubic", scale), data, scale, accelerator)
    psnr, ssim = PUBLISHED[dataset, scale]
    assert result["n_images"] == (5 if dataset == "Set5" else 14)
    assert abs(result["psnr_y"] - psnr) <= 0.02, result["psnr_y"]
    assert abs(result["ssim_y"] - ssim) <= 0.001, result["ssim_y"]


def test_cli_table_and_json(tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["eval", "--model", "bicubic", "--data", str(DATA / "Set5"), "--data", str(DATA / "Set14")]
    assert main([*args, "--scale", "4", "--gray", "direct", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Set14" in printed and "26.00" in printed and "28.43" in printed
    results = json.loads(out.read_text())["results"]
    assert [(r["dataset"], r["scale"], r["n_images"]) for r in results] == [("Set5", 4, 5), ("Set14", 4, 14)]
    for r in results:
        assert {"psnr_y", "ssim_y", "psnr_rgb", "per_image"} <= r.keys()
        assert len({p["name"] for p in r["per_image"]}) == r["n_images"]
        assert r["psnr_y"] == pytest.approx(sum(p["psnr_y"] for p in r["per_image"]) / r["n_images"])


def test_json_of_another_run_is_kept_unless_forced(tmp_path, capsys):
    """An existing --json file is refused before any scoring; --force replaces it whole (no hidden partial left)."""
    out = tmp_path / "eval.json"
    out.write_text("someone's results")
    args = ["eval", "--model", "bicubic", "--scale", "4", "--data", str(DATA / "Set5"), "--json", str(out)]
    assert main(args) == 2
    assert "eval.json already exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "someone's results"
    assert main([*args, "--force"]) == 0
    assert json.loads(out.read_text())["results"][0]["n_images"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]
    assert main(["eval", *args[1:-1], str(out / "x.json")]) == 2  # a file where a folder should be: before scoring
    assert f"{out} is a file, not a folder" in capsys.readouterr().err


def test_gray_convention_changes_only_gray_images(accelerator):
    direct, replicate = (
        evaluate_source(build_model("bicubic", 3), DataConfig(val=str(DATA / "Set14"), gray=g), 3, accelerator)
        for g in ("direct", "replicate")
    )
    for a, b in zip(direct["per_image"], replicate["per_image"], strict=True):
        assert a["name"] == b["name"]
        assert (a["psnr_y"] != b["psnr_y"]) == (a["name"] == "bridge.png")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_folder_pair_with_matlab_lr_equals_lr_made_on_the_fly(scale, accelerator):
    pair = f"{DATA / 'Set5'},{DATA / 'matlab_lr' / 'Set5' / f'x{scale}'}"
    made = evaluate_source(build_model("bicubic", scale), DataConfig(val=str(DATA / "Set5")), scale, accelerator)
    given = evaluate_source(build_model("bicubic", scale), DataConfig(val=pair), scale, accelerator)
    assert given["dataset"] == "Set5"
    assert [p["psnr_y"] for p in given["per_image"]] == [p["psnr_y"] for p in made["per_image"]]


@pytest.mark.parametrize("name", ["espcn", "srcnn"])
def test_tiled_inference_equals_whole_image(name):
    torch.manual_seed(0)
    model = build_model(name, 3).eval()
    lr = ValImages(load_images(DataConfig(val=str(DATA / "Set14")), "val"), 3)[0]["lr"][None]  # baboon
    with torch.no_grad():
        whole = super_resolve(model, lr, 3)
        tiled = super_resolve(model, lr, 3, tile=48, overlap=12)
        seams = super_resolve(model, lr, 3, tile=48, overlap=0)
    assert (tiled - whole).abs().max() < 1e-5
    assert (seams - whole).abs().max() > 1e-3  # without context the tile borders differ: the check has teeth


def test_checkpoint_folder_and_run_dir(tmp_path, accelerator):
    torch.manual_seed(0)
    model = build_model("espcn", 2, channels=16)
    optimizer = torch.optim.Adam(model.parameters())
    config = "model: {name: espcn, channels: 16}\nscale: 2\n"
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best", model, optimizer, TrainState(), config)
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(DATA / "Set5"), "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    direct = evaluate_source(model, DataConfig(val=str(DATA / "Set5")), 2, accelerator)
    assert result["scale"] == 2 and result["psnr_y"] == pytest.approx(direct["psnr_y"], abs=1e-9)
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(DATA / "Set5"), "--scale", "4"]) == 2
    if not torch.cuda.is_available():  # as training: never fp32 under an fp16 label
        assert main(["eval", "--model", "bicubic", "--scale", "2", "--data", str(DATA / "Set5"), "--mixed-precision",
                     "fp16"]) == 2  # fmt: skip


def test_a_damaged_checkpoint_is_refused_by_name(tmp_path, capsys):
    """A `best` whose weights no longer match its manifest (a crash in a copy, a bad disk) is named, not loaded."""
    model = build_model("espcn", 2, channels=16)
    best = tmp_path / "run" / "checkpoints" / "best"
    config = "model: {name: espcn, channels: 16}\nscale: 2\n"
    save_checkpoint(best, model, torch.optim.Adam(model.parameters()), TrainState(), config)
    weights = best / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(DATA / "Set5")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"checkpoint {best} is damaged" in err and "(truncated?)" in err and "checkpoints/last if it is complete" in err
    )


def test_mixed_precision_eval_runs_the_model_under_autocast(tmp_path, accelerator):
    """`srtrain eval --mixed-precision bf16` scores the bf16 forward: close to the float32 figure, not equal to it."""
    torch.manual_seed(0)
    model = build_model("espcn", 2, channels=16)
    config = "model: {name: espcn, channels: 16}\nscale: 2\n"
    save_checkpoint(tmp_path / "run", model, torch.optim.Adam(model.parameters()), TrainState(), config)
    fp32 = evaluate_source(model, DataConfig(val=str(DATA / "Set5")), 2, accelerator)["psnr_y"]
    args = ["--checkpoint", str(tmp_path / "run"), "--data", str(DATA / "Set5"), "--mixed-precision", "bf16"]
    cmd = [sys.executable, "-m", "srtrain", "eval", *args, "--json", str(tmp_path / "bf16.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # a fresh process: a fresh AcceleratorState
    assert proc.returncode == 0, proc.stderr[-3000:]
    bf16 = json.loads((tmp_path / "bf16.json").read_text())["results"][0]["psnr_y"]
    assert bf16 != fp32 and abs(bf16 - fp32) < 0.1, (bf16, fp32)


def test_two_processes_score_each_image_once(tmp_path):
    out = {n: tmp_path / f"eval{n}.json" for n in (1, 2)}
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    for n in (1, 2):
        cmd = [*accelerate_launch(n), "-m", "srtrain", "eval", "--model", "bicubic", "--data", str(DATA / "Set5")]
        proc = subprocess.run(
            [*cmd, "--scale", "4", "--json", str(out[n])], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"{n} process(es)" in proc.stdout
    one, two = (json.loads(out[n].read_text())["results"][0] for n in (1, 2))
    assert two["n_images"] == 5 and sorted(p["name"] for p in two["per_image"]) == sorted(
        p["name"] for p in one["per_image"]
    )
    assert two["psnr_y"] == pytest.approx(one["psnr_y"], abs=1e-9)


def test_every_metric_can_be_asked_for(tmp_path, capsys):
    out = tmp_path / "eval.json"
    metrics = "psnr_y,ssim_y,psnr_rgb,ssim_rgb,mse,nrmse,fsim"
    args = ["eval", "--model", "bicubic", "--data", str(DATA / "Set5"), "--scale", "4", "--metrics", metrics]
    assert main([*args, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert (
        set(metrics.split(","))
        <= result.keys()
        <= set(result["per_image"][0]) | {"dataset", "source", "scale", "n_images", "seconds", "per_image"}
    )
    assert 0 < result["fsim"] < 1 and 0 < result["mse"] < 0.01
    assert main(["eval", "--model", "bicubic", "--data", str(DATA / "Set5"), "--scale", "4", "--metrics", "psnr"]) == 2
    assert "unknown metric" in capsys.readouterr().err

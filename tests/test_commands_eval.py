"""`srtrain eval`: tables and JSON, checkpoints and run directories, every metric, bf16, two processes, and the
refusals that come before anything is scored. (The scoring itself is in test_evaluation.py.)"""

import json

import pytest
import torch
from accelerate import Accelerator
from helpers import DATA, launch, needs_data, python

from srtrain.checkpoint import TrainState, save_checkpoint
from srtrain.cli import main
from srtrain.config import DataConfig
from srtrain.evaluation import evaluate_source
from srtrain.models import build_model

pytestmark = needs_data


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


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


def test_ensemble_scores_the_self_ensemble_and_says_so(tmp_path, capsys, accelerator):
    """`--ensemble` scores what `evaluate_source(ensemble=True)` scores, not the plain figure; the table says which,
    and its seconds are the ensemble's."""
    torch.manual_seed(0)
    model = build_model("espcn", 2, channels=16)
    config = "model: {name: espcn, channels: 16}\nscale: 2\n"
    save_checkpoint(tmp_path / "run", model, torch.optim.Adam(model.parameters()), TrainState(), config)
    out = tmp_path / "eval.json"
    args = ["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(DATA / "Set5"), "--json", str(out)]
    assert main([*args, "--ensemble"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "x8 self-ensemble, 1 process(es)" in printed and "seconds" in printed
    (result,) = json.loads(out.read_text())["results"]
    data = DataConfig(val=str(DATA / "Set5"))
    ensemble, plain = (evaluate_source(model, data, 2, accelerator, ensemble=e) for e in (True, False))
    assert result["ensemble"] is True and result["psnr_y"] == pytest.approx(ensemble["psnr_y"], abs=1e-9)
    assert abs(result["psnr_y"] - plain["psnr_y"]) > 0.01 and plain["ensemble"] is False
    assert result["seconds"] > 0


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
    # a fresh process: a fresh AcceleratorState
    python(["-m", "srtrain", "eval", *args, "--json", str(tmp_path / "bf16.json")])
    bf16 = json.loads((tmp_path / "bf16.json").read_text())["results"][0]["psnr_y"]
    assert bf16 != fp32 and abs(bf16 - fp32) < 0.1, (bf16, fp32)


@pytest.mark.slow
def test_two_processes_score_each_image_once(tmp_path):
    out = {n: tmp_path / f"eval{n}.json" for n in (1, 2)}
    args = ["-m", "srtrain", "eval", "--model", "bicubic", "--data", str(DATA / "Set5"), "--scale", "4", "--json"]
    proc = python([*args, str(out[1])], tmp_path, CUDA_VISIBLE_DEVICES="")  # one process, no launcher
    assert "1 process(es)" in proc.stdout
    proc = launch([*args, str(out[2])], tmp_path, 2, ACCELERATE_USE_CPU="1")
    assert "2 process(es)" in proc.stdout
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
        <= set(result["per_image"][0]) | {"dataset", "source", "scale", "ensemble", "n_images", "seconds", "per_image"}
    )
    assert 0 < result["fsim"] < 1 and 0 < result["mse"] < 0.01
    assert main(["eval", "--model", "bicubic", "--data", str(DATA / "Set5"), "--scale", "4", "--metrics", "psnr"]) == 2
    assert "unknown metric" in capsys.readouterr().err

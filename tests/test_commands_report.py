"""`srtrain report` (srtrain/report.py) from real short runs: grouped leaderboards sorted by best PSNR-Y, every
linked image exists and opens, no overwriting without --force, and the leaderboard as a W&B Table (offline files
read back)."""

import json
import re
import shutil

import PIL.Image
import pytest
from helpers import DATA, metrics, needs_data, python

from srtrain.cli import main
from srtrain.config import load_config
from srtrain.train import train

pytestmark = needs_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory, photo_folder):
    """ESPCN and SRCNN at x2 for two epochs, ESPCN at x3 for one: tiny real runs on Set5 crops."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for model, scale, epochs in (("espcn", 2, 2), ("srcnn", 2, 2), ("espcn", 3, 1)):
        run = root / f"{model}_x{scale}"
        overrides = {
            "model": model,
            "scale": scale,
            "epochs": epochs,
            "data.train": str(photo_folder),
            "data.val": str(DATA / "Set5"),
            "data.max_val_images": 2,
            "data.repeat": 4,
            "patch_size": 30 if scale == 3 else 32,
            "batch_size": 8,
            "lr": 0.002,
            "num_samples": 1,
            "wandb.mode": "disabled",
            "output_dir": str(run),
        }
        train(load_config(None, overrides))
        out.append(run)
    return out


@pytest.mark.slow
def test_report_groups_ranks_and_links_images_that_open(runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "-o", str(out), "--images", "1"]) == 0
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 6  # PSNR curve, loss curve and crops for each of the two groups
    for link in links:
        with PIL.Image.open(out / link) as image:
            image.verify()
    x2, x3 = text.split("## x2 on ")[1].split("## x3 on ")
    assert "espcn_x3" not in x2 and "srcnn" not in x3  # different scales are never ranked together
    best = [float(v) for v in re.findall(r"\*\*([0-9.]+)\*\*", x2)]
    assert len(best) == 2 and best == sorted(best, reverse=True)
    rows = metrics(runs[0])
    assert f"**{max(r['psnr_y'] for r in rows):.2f}**" in x2  # the leaderboard shows the run's own numbers


@pytest.mark.slow
def test_report_never_overwrites_without_force(runs, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    assert main(["report", str(runs[0]), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "report.md").read_text() == "my notes"
    assert main(["report", str(runs[0]), "-o", str(out), "--force", "--images", "1"]) == 0
    assert (out / "report.md").read_text().startswith("# srtrain report")


def test_not_a_run_directory_is_named(tmp_path, capsys):
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r")]) == 2
    assert str(tmp_path) in capsys.readouterr().err


@pytest.mark.slow
def test_leaderboard_as_wandb_table(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = ["report", str(runs[0]), str(runs[1]), "-o", str(tmp_path / "r"), "--images", "1"]
    assert main([*args, "--wandb-project", "srtrain-report-test"]) == 0
    (table,) = tmp_path.glob("wandb/offline-run-*/files/media/table/leaderboard_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"][:3] == ["group", "run", "model"] and len(content["data"]) == 2


@pytest.mark.slow
def test_when_w_b_refuses_the_leaderboard_the_report_is_still_complete(runs, tmp_path):
    """Online W&B without an API key (a machine without a login) fails after report.md is written: status 1 and
    the way out, not a traceback. (A subprocess: W&B keeps the first in-process run's settings.)"""
    env = {"WANDB_MODE": "online", "WANDB_DIR": str(tmp_path), "HOME": str(tmp_path)}  # (no WANDB_API_KEY: conftest)
    out = tmp_path / "r"
    cmd = ["-m", "srtrain", "report", str(runs[0]), "-o", str(out), "--images", "1"]
    proc = python([*cmd, "--wandb-project", "p"], check=False, **env)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "the leaderboard was not logged to W&B project p" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "report.md").read_text().startswith("# srtrain report")


@pytest.mark.slow
def test_a_failed_report_leaves_nothing_that_blocks_its_retry(runs, tmp_path, capsys):
    """The validation images are gone when the crops are drawn: the curves already written go too, so that the
    retry, once the images are back, needs no --force."""
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    config = run / "config.yaml"
    saved = config.read_text()
    config.write_text(saved.replace(str(DATA / "Set5"), str(tmp_path / "moved")))
    out = tmp_path / "r"
    assert main(["report", str(run), "-o", str(out), "--images", "1"]) == 2
    assert "moved" in capsys.readouterr().err and not [p for p in out.rglob("*") if p.is_file()]
    config.write_text(saved)
    assert main(["report", str(run), "-o", str(config), "--images", "1"]) == 2  # -o names a file
    assert f"{config} is a file, not a folder" in capsys.readouterr().err
    assert main(["report", str(run), "-o", str(out), "--images", "1"]) == 0

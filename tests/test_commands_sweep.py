"""`srtrain sweep FILE`: a W&B grid without a W&B server, listed, checked, its points' arguments, one point run
here. (The grid itself: test_sweep.py; the SLURM array: test_slurm.py.)"""

import pytest
import yaml
from helpers import ROOT, needs_data, srtrain, tiny_grid, wandb_run_record, wandb_segments, wandb_summary

from srtrain.sweep import grid_points


def test_dry_run_builds_every_point():
    proc = srtrain(["sweep", "sweeps/grid.yaml", "--dry-run"], ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "27 points, every config valid and every model builds" in proc.stdout


def test_point_args_are_the_agents(tmp_path):
    proc = srtrain(["sweep", "sweeps/grid.yaml", "--args", "26"], ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "--resume=auto",
        "--epochs=20",
        "--lr=0.0003",
        "--model=edsr",
        "--scale=4",
        "--output_dir=runs/model-lr-scale/26",
        "--wandb.group=model-lr-scale",
        "--wandb.name=model-lr-scale-26",
    ]


def test_cli_refuses_bayes_offline_and_names_a_bad_point(tmp_path):
    proc = srtrain(["sweep", "sweeps/bayes.yaml", "--list"], ROOT)
    assert proc.returncode == 2 and "method 'bayes' cannot run offline" in proc.stderr
    config = yaml.safe_load((ROOT / "sweeps" / "grid.yaml").read_text())
    config["parameters"]["scale"]["values"] = [2, 5]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = srtrain(["sweep", str(path), "--dry-run"], ROOT)
    assert proc.returncode == 2 and "scale must be 2, 3 or 4, got 5" in proc.stderr


@pytest.mark.slow
@needs_data
def test_run_one_point_offline(tmp_path, photo_folder):
    """`srtrain sweep FILE --run I`: point I trains here into runs/<sweep>/<I>, its W&B run grouped by the sweep."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_grid(photo_folder)))
    proc = srtrain(["sweep", str(path), "--run", "3"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    point = grid_points(tiny_grid(photo_folder))[3]
    out = tmp_path / "runs" / "tiny" / "3"
    (run_dir,) = wandb_segments(out)
    record = wandb_run_record(run_dir)
    assert (record["run_group"], record["display_name"]) == ("tiny", "tiny-3")
    config = wandb_summary(run_dir)["config"]
    assert (config["model"]["name"], config["lr"]) == (point["model"], point["lr"])
    assert srtrain(["sweep", str(path), "--run", "4"], tmp_path).returncode == 2  # 4 points: 0 to 3

"""W&B grid sweeps (srtrain/sweep.py): the YAMLs in sweeps/ checked by W&B's own sweep engine (the `sweeps`
package), the grid in W&B's order, and bad sweeps refused with the reason. (`srtrain sweep`:
test_commands_sweep.py; a run of W&B's own agent: test_tracking.py.)"""

import re

import pytest
import sweeps
import yaml
from helpers import ROOT, srtrain

from srtrain.config import ConfigError
from srtrain.sweep import grid_points, load_sweep
from srtrain.tracking import SWEEP_METRICS

YAMLS = sorted((ROOT / "sweeps").glob("*.yaml"))


def wandb_order(config: dict) -> list[dict]:
    """Every point of a grid as W&B's controller hands them out, one after another."""
    runs: list[sweeps.SweepRun] = []
    while (run := sweeps.next_run(config, runs, validate=True)) is not None:
        runs.append(sweeps.SweepRun(name=f"r{len(runs)}", config=run.config, state=sweeps.RunState.finished))
    return [{k: v["value"] for k, v in r.config.items()} for r in runs]


def test_sweeps_folder_has_a_grid_and_a_bayes_example():
    methods = {yaml.safe_load(p.read_text())["method"] for p in YAMLS}
    assert {"grid", "bayes"} <= methods
    grid = yaml.safe_load((ROOT / "sweeps" / "grid.yaml").read_text())
    assert {"espcn", "srcnn", "edsr"} <= set(grid["parameters"]["model"]["values"])
    assert len(grid["parameters"]["lr"]["values"]) == 3 and grid["parameters"]["scale"]["values"] == [2, 3, 4]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_yaml_valid_by_wandb_rules(path):
    config = yaml.safe_load(path.read_text())
    sweeps.SweepConfig(config)  # W&B's JSON schema; raises on a violation
    assert sweeps.next_run(config, [], validate=True) is not None  # some errors surface only when choosing a run
    assert config["program"] == "srtrain/main.py"
    assert config["command"] == ["${env}", "accelerate", "launch", "${program}", "${args}"]
    assert config["metric"]["name"] in SWEEP_METRICS
    if config["method"] != "grid":
        assert "early_terminate" in config
    load_sweep(path)


def test_grid_order_is_wandbs():
    config = yaml.safe_load((ROOT / "sweeps" / "grid.yaml").read_text())
    points = grid_points(config)
    assert points == wandb_order(config)
    listed = srtrain(["sweep", "sweeps/grid.yaml", "--list"], ROOT)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == len(points) == 27
    assert lines == [f"{i} " + " ".join(f"{k}={v}" for k, v in p.items()) for i, p in enumerate(points)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "bayes"}, "method 'bayes' cannot run offline: W&B's controller chooses each run"),
        ({"method": "random"}, "method 'random' cannot run offline"),
        ({"metric": {"name": "psnr", "goal": "maximize"}}, "metric 'psnr' is never logged by srtrain"),
        ({"command": ["${env}", "accelerate", "launch", "${program}"]}, "lacks ${args}"),
        ({"parameters": {"lr": {"min": 0.1, "max": 1.0}}}, "parameter 'lr' has no 'values' list"),
        ({"parameters": {"lr": {"values": [0.1, 0.1]}}}, "parameter 'lr' lists a value twice"),
    ],
)
def test_bad_sweeps_are_refused_with_the_reason(tmp_path, change, message):
    config = yaml.safe_load((ROOT / "sweeps" / "grid.yaml").read_text()) | change
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=re.escape(message)):
        grid_points(load_sweep(path))

"""W&B sweeps: the YAMLs in sweeps/ checked by W&B's own sweep engine (the `sweeps` package), `srtrain sweep`, and
a run started by W&B's real agent code joining the agent's run."""

import json
import os
import re
import subprocess
from pathlib import Path
from unittest import mock

import pytest
import sweeps
import wandb.apis.public.sweeps as wandb_sweep_api
import yaml
from conftest import ROOT, needs_data
from test_train import wandb_history, wandb_summary

from srtrain.config import ConfigError
from srtrain.sweep import grid_points, load_sweep
from srtrain.tracking import SWEEP_METRICS

YAMLS = sorted((ROOT / "sweeps").glob("*.yaml"))


def srtrain_sweep(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["python", "-m", "srtrain", "sweep", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


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
    listed = srtrain_sweep("sweeps/grid.yaml", "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == len(points) == 27
    assert lines == [f"{i} " + " ".join(f"{k}={v}" for k, v in p.items()) for i, p in enumerate(points)]


def test_dry_run_builds_every_point():
    proc = srtrain_sweep("sweeps/grid.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "27 points, every config valid and every model builds" in proc.stdout


def test_point_args_are_the_agents(tmp_path):
    proc = srtrain_sweep("sweeps/grid.yaml", "--args", "26")
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


def test_cli_refuses_bayes_offline_and_names_a_bad_point(tmp_path):
    proc = srtrain_sweep("sweeps/bayes.yaml", "--list")
    assert proc.returncode == 2 and "method 'bayes' cannot run offline" in proc.stderr
    config = yaml.safe_load((ROOT / "sweeps" / "grid.yaml").read_text())
    config["parameters"]["scale"]["values"] = [2, 5]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = srtrain_sweep(str(path), "--dry-run")
    assert proc.returncode == 2 and "scale must be 2, 3 or 4, got 5" in proc.stderr


def tiny_grid(train_dir: Path) -> dict:
    """Two models x two learning rates, one short epoch each on four Set5 crops (validated on two of them)."""
    fixed = {
        "epochs": 1,
        "data.train": str(train_dir),
        "data.val": str(train_dir),
        "data.max_val_images": 2,
        "data.repeat": 8,
        "batch_size": 8,
        "patch_size": 32,
        "num_samples": 1,
        "resume": "auto",
    }
    return {
        "name": "tiny",
        "program": "srtrain/main.py",
        "method": "grid",
        "metric": {"name": "best_psnr_y", "goal": "maximize"},
        "parameters": {"model": {"values": ["espcn", "srcnn"]}, "lr": {"values": [0.001, 0.002]}}
        | {k: {"value": v} for k, v in fixed.items()},
        "command": ["${env}", "accelerate", "launch", "${program}", "${args}"],
    }


@needs_data
def test_wandb_agent_run_joins_the_agents_run(tmp_path, monkeypatch, photo_folder):
    """W&B's real Agent with only its three server calls answered here: its command line, environment and
    subprocess are its own. The run srtrain starts must be the agent's run, with the swept values and metric."""
    config = tiny_grid(photo_folder)
    (point,) = sweeps.next_runs(config, [], validate=True, n=1)
    args = json.loads(json.dumps(point.config))  # the server sends JSON (numpy scalars would not survive)
    run_id, sweep_id = "agentrun", "tinysweep"
    heartbeats = [[{"type": "run", "run_id": run_id, "args": args, "program": str(ROOT / "srtrain" / "main.py")}]]
    monkeypatch.setattr(wandb_sweep_api, "_sweep_with_runs", lambda *a, **k: {"config": yaml.safe_dump(config)})
    monkeypatch.setattr(wandb_sweep_api, "_register_agent", lambda *a, **k: {"id": "agent-1"})
    monkeypatch.setattr(wandb_sweep_api, "_agent_heartbeat", lambda *a, **k: heartbeats.pop() if heartbeats else [])
    monkeypatch.setattr("wandb.Api", lambda *a, **k: None)
    agent_env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    agent_env |= {"WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline"}
    monkeypatch.chdir(tmp_path)
    from wandb.wandb_agent import run_agent

    with mock.patch.dict(os.environ, agent_env, clear=True):  # the agent sets WANDB_* for its child: undone after
        run_agent(sweep_id, project="sr-sweeps", count=1)

    out = tmp_path / "runs" / f"sweep-{sweep_id}" / run_id
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith(f"-{run_id}")
    summary = wandb_summary(run_dir)
    assert summary["state"] == "finished" and summary["project"] == "sr-sweeps"
    swept = {k: v["value"] for k, v in args.items()}
    assert {k: summary["config"][k] for k in ("lr", "model")} == {"lr": swept["lr"], "model": swept["model"]}
    history = wandb_history(run_dir)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [h["best_psnr_y"] for h in history if "best_psnr_y" in h]  # other rows: the loss within epochs
    assert logged == pytest.approx([r["best_psnr_y"] for r in rows])
    assert summary["summary"]["best_psnr_y"] == pytest.approx(rows[-1]["best_psnr_y"])


def wandb_run_record(run_dir: Path) -> dict:
    proc = subprocess.run(
        ["wandb", "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True, check=True, timeout=120
    )
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return next(r["run"] for r in records if r.get("type") == "run")


@needs_data
def test_run_one_point_offline(tmp_path, photo_folder):
    """`srtrain sweep FILE --run I`: point I trains here into runs/<sweep>/<I>, its W&B run grouped by the sweep."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_grid(photo_folder)))
    proc = srtrain_sweep(str(path), "--run", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    point = grid_points(tiny_grid(photo_folder))[3]
    out = tmp_path / "runs" / "tiny" / "3"
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    record = wandb_run_record(run_dir)
    assert (record["run_group"], record["display_name"]) == ("tiny", "tiny-3")
    config = wandb_summary(run_dir)["config"]
    assert (config["model"]["name"], config["lr"]) == (point["model"], point["lr"])
    assert srtrain_sweep(str(path), "--run", "4", cwd=tmp_path).returncode == 2  # 4 points: 0 to 3

"""srtrain/tracking.py: what a run logs to W&B (offline files read back with W&B's own reader), and training that
goes on when W&B cannot: a server that does not answer, a W&B service killed with the job, a W&B sweep agent whose
run the training joins."""

import json
import os
import random
import signal
from pathlib import Path
from unittest import mock

import pytest
import sweeps
import wandb.apis.public.sweeps as wandb_sweep_api
import yaml
from helpers import (
    ROOT,
    assert_identical,
    checkpointed_job,
    children_named,
    free_port,
    metrics,
    needs_data,
    paused_srtrain,
    python,
    srtrain,
    tiny_grid,
    tiny_job,
    wait_gone,
    wandb_history,
    wandb_segments,
    wandb_summary,
)

from srtrain.config import load_config
from srtrain.rundir import RunDir, agent_run_dir
from srtrain.stopping import EXIT_RESUMABLE
from srtrain.tracking import WANDB_EPOCHS, new_run_id, wandb_epochs, wandb_mode

pytestmark = needs_data


def test_the_wandb_mode_and_run_id_come_from_the_job_then_the_environment(monkeypatch, tmp_path):
    """wandb.mode, else $WANDB_MODE, else online with an API key (or a W&B login in ~/.netrc) and offline without;
    a sweep agent's $WANDB_RUN_ID and its run directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_RUN_ID", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(name, raising=False)
    assert wandb_mode(load_config(overrides={"wandb.mode": "disabled"})) == "disabled"
    assert wandb_mode(load_config()) == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode(load_config()) == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(load_config()) == "offline"
    run_id = new_run_id()
    assert len(run_id) == 8 and run_id != new_run_id() and agent_run_dir() is None
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun")
    monkeypatch.setenv("WANDB_SWEEP_ID", "tinysweep")
    assert new_run_id() == "agentrun" and agent_run_dir() == Path("runs") / "sweep-tinysweep" / "agentrun"


@pytest.mark.slow
def test_wandb_offline_run_read_back(full_run):
    out, proc = full_run
    (run_dir,) = wandb_segments(out)
    summary = wandb_summary(run_dir)
    rows = metrics(out)
    assert summary["state"] == "finished" and summary["project"] == "srtrain"
    assert summary["config"]["lr"] == 0.002 and summary["config"]["model"]["name"] == "espcn"
    assert summary["summary"]["best_psnr_y"] == pytest.approx(max(r["psnr_y"] for r in rows))
    history = wandb_history(run_dir)
    assert [h["_step"] for h in history] == list(range(1, 9))  # one row per optimizer step: 4 per epoch
    assert all("train/loss" in h and "train/lr" in h for h in history)
    epochs = [h for h in history if "psnr_y" in h]  # epoch metrics on the same step axis, `epoch` a metric
    assert [(h["epoch"], h["_step"]) for h in epochs] == [(1, 4), (2, 8)]
    assert [h["psnr_y"] for h in epochs] == pytest.approx([r["psnr_y"] for r in rows])
    assert all(h["samples._type"] == "image-file" for h in epochs)
    assert len(list((run_dir / "files" / "media" / "images").glob("*.png"))) == 2
    assert "wandb sync" in proc.stdout


@pytest.mark.slow
def test_an_unreachable_wandb_server_leaves_the_run_offline(photo_folder, tmp_path):
    """WANDB_MODE=online and a server that does not answer: after a bounded wait (WANDB_INIT_TIMEOUT, 30 s unless
    set) the run goes on offline with one warning, no traceback, and its W&B files hold every epoch."""
    out = tmp_path / "run"
    env = {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nobody listens there
        "WANDB_API_KEY": "x" * 40,
        "WANDB_INIT_TIMEOUT": "3",
    }
    proc = python(["-m", "srtrain", *tiny_job(photo_folder, out, "--epochs=2")], tmp_path, **env)
    assert "warning: W&B could not start online" in proc.stdout and "running offline" in proc.stdout
    assert "Traceback" not in proc.stderr
    (segment,) = wandb_segments(out)
    assert sorted(h["epoch"] for h in wandb_history(segment) if "psnr_y" in h) == [1, 2]


@pytest.mark.slow
def test_when_slurm_stops_w_b_too_training_still_saves_its_step(reference, photo_folder, tmp_path):
    """scancel and scontrol requeue SIGTERM every process of the job, W&B's service (in a session of its own)
    among them: W&B failing must not stop the trainer from saving its step, writing the marker and exiting 75.
    The resume then ends as the uninterrupted run, each epoch once in W&B."""
    out = tmp_path / "run"
    trainer = paused_srtrain(checkpointed_job(photo_folder, out), tmp_path, "pause:step:3", "offline")
    (service,) = children_named(trainer.pid, "wandb-core")
    os.kill(service, signal.SIGTERM)
    wait_gone(service)
    trainer.send_signal(signal.SIGTERM)
    stdout, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode == EXIT_RESUMABLE, stderr[-3000:]
    assert "warning: W&B failed" in stdout and "training goes on" in stdout
    assert json.loads(RunDir(out).stopped.read_text())["step"] == 3
    proc = srtrain(checkpointed_job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, reference)
    epochs = [h["epoch"] for run in wandb_segments(out) for h in wandb_history(run) if "psnr_y" in h]
    assert sorted(epochs) == [1, 2]


@pytest.mark.slow
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
    (run_dir,) = wandb_segments(out)
    assert run_dir.name.endswith(f"-{run_id}")
    summary = wandb_summary(run_dir)
    assert summary["state"] == "finished" and summary["project"] == "sr-sweeps"
    swept = {k: v["value"] for k, v in args.items()}
    assert {k: summary["config"][k] for k in ("lr", "model")} == {"lr": swept["lr"], "model": swept["model"]}
    history = wandb_history(run_dir)
    rows = metrics(out)
    logged = [h["best_psnr_y"] for h in history if "best_psnr_y" in h]  # other rows: the loss within epochs
    assert logged == pytest.approx([r["best_psnr_y"] for r in rows])
    assert summary["summary"]["best_psnr_y"] == pytest.approx(rows[-1]["best_psnr_y"])


def test_an_unreadable_wandb_segment_does_not_block_the_resume(tmp_path, capsys):
    """A resume asks W&B's reader which epochs a killed segment holds; a garbled `.wandb` file it cannot read
    means "log them again" (a warning), not a failed resume, and is read again next time (not cached)."""
    segment = tmp_path / "wandb" / "offline-run-20260101_000000-abc"
    segment.mkdir(parents=True)
    (segment / "run-abc.wandb").write_bytes(random.Random(0).randbytes(3000))
    assert wandb_epochs(RunDir(tmp_path), "abc") == set()
    assert f"W&B cannot read {segment}" in " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "wandb" / WANDB_EPOCHS).read_text()) == {}

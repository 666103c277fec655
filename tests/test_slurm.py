"""The slurm/ batch scripts on a real SLURM cluster: two slurmd nodes on this host (slurm/testing/cluster.sh),
brought up once per session. Jobs are tiny (four 120x120 Set5 crops, ESPCN, 32-pixel patches)."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, metrics, needs_data, tiny_grid, wandb_history
from safetensors.torch import load_file

pytestmark = [needs_data, pytest.mark.slow]
CLUSTER = ROOT / "slurm" / "testing" / "cluster.sh"
INSTALL_FAILED = 3  # cluster.sh's exit code when apt-get cannot install the SLURM packages
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """Environment for sbatch & co. on a running two-node cluster, stopped again at the end of the session."""
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SRTRAIN_SLURM_DIR": str(state), "SLURM_CONF": str(state / "slurm.conf")}
    up = subprocess.run([str(CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=600)
    try:
        if up.returncode == INSTALL_FAILED:
            pytest.skip(f"apt-get could not install SLURM here: {up.stderr[-500:]}")
        assert up.returncode == 0, up.stdout + up.stderr
        yield env
    finally:
        subprocess.run([str(CLUSTER), "down"], env=env, capture_output=True, text=True, timeout=120)


def tiny(photo_folder: Path, *extra: str) -> list[str]:
    return [
        f"--data.train={photo_folder}",
        f"--data.val={photo_folder}",
        "--data.max_val_images=2",
        "--data.repeat=8",
        "--batch_size=8",
        "--patch_size=32",
        "--num_samples=1",
        *extra,
    ]


def sbatch(env: dict, workdir: Path, script: str, *args: str, options: tuple[str, ...] = ()) -> str:
    """Submit from the repository root (as the README does) to run in `workdir`; return the job id."""
    workdir.mkdir(exist_ok=True)
    log = workdir / "slurm-%j.out"
    command = ["sbatch", "--parsable", f"--chdir={workdir}", f"--output={log}", *options, script, *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60)
    return proc.stdout.strip().split(";")[0]


def job_fields(env: dict, job: str) -> list[dict[str, str]]:
    """`scontrol show job` as key=value fields, one dict per job (one per array task)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines()]


def wait_done(env: dict, job: str, timeout_s: float = 600) -> list[dict[str, str]]:
    """Every task of `job` once all reached a final state (what `sbatch --wait` does, polled more often)."""
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = job_fields(env, job)
        if all(t["JobState"] in FINAL_STATES for t in tasks):
            return tasks
        assert time.monotonic() < deadline, f"job {job} not done after {timeout_s} s: {tasks}"
        time.sleep(0.5)  # a poll interval of the scheduler's state, not a stand-in for an event


def log(workdir: Path, job: str) -> str:
    return (workdir / f"slurm-{job}.out").read_text()


def run_dir(workdir: Path, name: str, job: str) -> Path:
    return workdir / "runs" / f"{name}-{job}"


def offline_runs(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*"))


def preemptible(photo_folder: Path) -> tuple[str, ...]:
    """train.sbatch's arguments for the job the preemption test stops: epochs long enough to signal one mid-way."""
    return ("jobs/quick.yaml", *tiny(photo_folder, "--epochs=3", "--data.repeat=32"))


@pytest.fixture(scope="module")
def straight(slurm, photo_folder, tmp_path_factory) -> tuple[Path, str]:
    """`preemptible`'s job through train.sbatch, never stopped: (its working directory, its job id). Submitted here,
    waited for by the tests that read it: the preempted job's reference, whose job trains beside it (the signal must
    find that job mid-training), then test_train_sbatch."""
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, sbatch(slurm, workdir, "slurm/train.sbatch", *preemptible(photo_folder))


def test_configuration_error_ends_the_job_with_2_and_one_line(slurm, photo_folder, tmp_path):
    """Checked before the launcher starts (which would exit 1 with its own traceback): status 2, one line."""
    job = sbatch(slurm, tmp_path, "slurm/train.sbatch", "jobs/quick.yaml", *tiny(photo_folder, "--lr=-1"))
    (task,) = wait_done(slurm, job)
    text = log(tmp_path, job)
    assert (task["JobState"], task["ExitCode"]) == ("FAILED", "2:0"), text[-3000:]
    assert "error: lr must be a positive number, got -1.0" in text and "Traceback" not in text
    assert not (tmp_path / "runs").exists()


def test_multinode_sbatch_one_ddp_job_over_two_nodes(slurm, photo_folder, tmp_path):
    job = sbatch(slurm, tmp_path, "slurm/multinode.sbatch", "jobs/quick.yaml", *tiny(photo_folder, "--epochs=2"))
    (task,) = wait_done(slurm, job)
    text = log(tmp_path, job)
    assert (task["JobState"], task["ExitCode"], task["NodeList"]) == ("COMPLETED", "0:0", "n[1-2]"), text[-3000:]
    out = run_dir(tmp_path, "srtrain-multinode", job)
    assert [r["epoch"] for r in metrics(out)] == [1, 2]  # one line per epoch: one job, not two copies
    assert "2 process(es) on cpu" in text
    assert "weights identical on all 2 processes" in text  # the trainer compares replica checksums every epoch
    assert len(offline_runs(out)) == 1


def test_grid_array_runs_every_point(slurm, photo_folder, tmp_path):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump(tiny_grid(photo_folder)))
    options = f"--parsable --chdir={tmp_path} --output={tmp_path}/slurm-%A_%a.out"
    submit = subprocess.run(
        ["python", "-m", "srtrain", "sweep", str(sweep), "--slurm", f"--sbatch={options}"],
        cwd=ROOT,
        env=slurm,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip()
    tasks = wait_done(slurm, job)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1", "2", "3"]
    assert all((t["JobState"], t["ExitCode"]) == ("COMPLETED", "0:0") for t in tasks), tasks
    listed = subprocess.run(
        ["python", "-m", "srtrain", "sweep", str(sweep), "--list"], env=slurm, capture_output=True, text=True
    ).stdout.splitlines()
    assert len(listed) == 4
    for line in listed:
        index, *values = line.split()
        point = dict(v.split("=", 1) for v in values)
        ran = yaml.safe_load((tmp_path / "runs" / "tiny" / index / "config.yaml").read_text())
        assert (ran["model"]["name"], ran["lr"]) == (point["model"], float(point["lr"]))
        assert (ran["wandb"]["group"], ran["wandb"]["name"]) == ("tiny", f"tiny-{index}")
        assert [r["epoch"] for r in metrics(tmp_path / "runs" / "tiny" / index)] == [1]


def test_preempted_job_requeues_itself_and_ends_as_if_never_stopped(slurm, straight, photo_folder, tmp_path):
    """USR1 in the middle of an epoch (what `--signal=B:USR1@120` sends before the time limit): the batch shell passes
    it to the trainer, which checkpoints its current step and stops; the job requeues and the same job resumes, to
    end as the `straight` job."""
    ref_dir, reference = straight
    job = sbatch(slurm, tmp_path, "slurm/train.sbatch", *preemptible(photo_folder))
    out = run_dir(tmp_path, "srtrain", job)
    first_checkpoint = out / "checkpoints" / "last" / "training_state.pt"  # swapped in whole after epoch 1
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists():
        assert time.monotonic() < deadline and job_fields(slurm, job)[0]["JobState"] not in FINAL_STATES
        time.sleep(0.2)  # a poll interval of the run directory, not a stand-in for an event
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=slurm, check=True, timeout=60)

    (task,) = wait_done(slurm, job)
    (ref_task,) = wait_done(slurm, reference)
    text = log(tmp_path, job)
    assert (task["JobState"], task["ExitCode"], task["Restarts"]) == ("COMPLETED", "0:0", "1"), text[-3000:]
    assert ref_task["JobState"] == "COMPLETED"
    assert "srtrain: stopped by SIGUSR1 at step" in text  # the trainer's checkpoint at its step, mid-epoch (issue 9)
    assert "USR1 received" in text and f"requeueing job {job}" in text
    assert "SLURM_RESTART_COUNT=1" in text and "resuming at step" in text
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3]  # every epoch exactly once
    attempts = offline_runs(out)
    assert len(attempts) == 2 and len({p.name.rsplit("-", 1)[1] for p in attempts}) == 1  # one W&B run, by id
    first, second = ([h["_step"] for h in wandb_history(p)] for p in attempts)
    assert first and second and max(first) < min(second)  # the requeued job continues the steps
    weights = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    ref_out = run_dir(ref_dir, "srtrain", reference)
    ref_weights = load_file(str(ref_out / "checkpoints" / "last" / "model.safetensors"))
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights)


def test_train_sbatch(slurm, straight):
    """After the preemption test, which runs its job beside this one as it would beside any other."""
    workdir, job = straight
    (task,) = wait_done(slurm, job)
    text = log(workdir, job)
    assert (task["JobState"], task["ExitCode"]) == ("COMPLETED", "0:0"), text[-3000:]
    out = run_dir(workdir, "srtrain", job)
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3]
    assert all((out / "checkpoints" / name / "model.safetensors").is_file() for name in ("last", "best"))
    (wandb_run,) = offline_runs(out)
    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)["state"]
    assert wandb_run.name.endswith("-" + state["wandb_run_id"])
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["repeat"] == 32  # the job YAML said 16
    assert "SLURM_RESTART_COUNT=0" in text and "1 process(es) on cpu" in text


LAUNCHER = """import os, subprocess, sys, time
open("launcher_up", "w").close()
while not os.path.exists("go"):  # the launcher starting up, no training process yet
    time.sleep(0.05)
sys.exit(1 if subprocess.call([sys.executable, "-c", "import time; time.sleep(60)"]) else 0)
"""
BATCH = """source "$SLURM_SUBMIT_DIR/slurm/common.sh"
requeue() { echo "requeue: $1"; }  # no controller here: what the script would ask of it
run_preemptible 1 python3 launcher.py
"""


def test_a_warning_before_the_trainer_exists_is_passed_on_when_it_does(tmp_path):
    """USR1 while `accelerate launch` is still starting (no training process yet) was passed to nobody and lost:
    the job then trained through its time limit. common.sh keeps it pending and passes it on (the run is
    requeued). The shell functions of a batch script, run here as a batch script would run them."""
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    (tmp_path / "batch.sh").write_text(BATCH)
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n1"}
    log = tmp_path / "log"
    with open(log, "w") as out:
        batch = subprocess.Popen(["bash", "batch.sh"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (tmp_path / "launcher_up").exists():
        assert batch.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    batch.send_signal(signal.SIGUSR1)
    while "USR1 came before training started" not in log.read_text():
        assert batch.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    (tmp_path / "go").touch()
    assert batch.wait(timeout=120) == 1, log.read_text()
    text = log.read_text()
    assert re.search(r"passing USR1 on to process\(es\) \d+", text), text
    assert "requeue: training stopped with exit code 1" in text

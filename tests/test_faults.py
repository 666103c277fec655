"""Fault injection, for real: processes killed with SIGKILL at chosen steps, real signals through `accelerate
launch`, damaged checkpoint files, a real full disk. Each run is resumed and compared with one that never failed.

Kill points come from `SRTRAIN_FAULT` (srtrain/faults.py), so that every run is deterministic, not timed.
"""

import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import accelerate
import pytest
import torch
from conftest import ROOT, accelerate_launch, free_port, needs_data
from packaging.version import Version
from safetensors.torch import load_file
from test_train import metrics, tiny_job, wandb_history

from srtrain.checkpoint import checkpoint_problem, read_state
from srtrain.faults import READY_FILE
from srtrain.rundir import RunDir
from srtrain.stopping import EXIT_RESUMABLE
from srtrain.tracking import WANDB_EPOCHS, wandb_epochs

pytestmark = needs_data
MAIN = str(ROOT / "srtrain" / "main.py")
STEPS = 8  # 4 images x repeat 8 / batch 8 = 4 steps per epoch, 2 epochs
NEW_LAUNCHER = Version(accelerate.__version__) >= Version("1.16")  # ends its process tree on SIGTERM, SIGKILL 5 s on


def job(photos: Path, out: Path, *extra: str) -> list[str]:
    """Tiny, with a cosine schedule (the learning rate must continue exactly) and a checkpoint every step."""
    return tiny_job(photos, out, "--epochs=2", "--scheduler=cosine", "--min_lr=0.0001", "--checkpoint_every=1", *extra)


def srtrain(args: list[str], cwd: Path, fault: str = "", wandb: str = "offline") -> subprocess.CompletedProcess:
    """One process, started directly (the launcher is tested with signals below)."""
    env = {**os.environ, "WANDB_MODE": wandb, "SRTRAIN_FAULT": fault}
    return subprocess.run(
        [sys.executable, "-m", "srtrain", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last" / "model.safetensors"))


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photo_folder):
    """The job straight through, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    proc = srtrain(job(photo_folder, out), root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sigkill_anywhere_then_resume_is_bit_identical(reference, photo_folder, tmp_path):
    """SIGKILL at seeded random steps, inside a checkpoint write, in validation, between an epoch's checkpoint
    and its W&B log, and right after that log (before its metrics line); after each, `--resume=auto`. The end: the
    same weights, bit for bit, every epoch exactly once in metrics.jsonl and across the W&B segments (at its step),
    one W&B run whose steps continue."""
    rng = random.Random(9)
    a, b = rng.randint(2, STEPS // 2), rng.randint(STEPS // 2 + 1, STEPS - 1)
    c = rng.randint(b + 1, STEPS)
    faults = [
        f"kill:step:{a}",
        "kill:validation:1",
        "kill:epoch_end:1",
        f"kill:checkpoint:{b}",
        f"kill:step:{c}",
        "kill:after_log:2",  # within W&B's file flush interval after the row's log: the file may lack it
    ]
    out = tmp_path / "run"
    for i, fault in enumerate(faults):
        proc = srtrain(job(photo_folder, out, *(["--resume=auto"] if i else [])), tmp_path, fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr[-3000:])
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The last kill came after epoch 2's checkpoint: the run is finished. Its W&B file holds epoch 2's row or not,
    # as the flush timer had it: if not, the resume opens a segment to restore it; if so, there is nothing to do.
    finished = "already finished (epoch 2 of 2" in proc.stdout
    assert finished or "resuming at step" in proc.stdout
    assert_identical(out, reference)
    rows, ref_rows = metrics(out), metrics(reference)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row, ref in zip(rows, ref_rows, strict=True):
        for key in ("step", "train_loss", "val_loss", "psnr_y", "lr"):
            assert row[key] == ref[key], key
    assert read_state(out / "checkpoints" / "best").epoch == read_state(reference / "checkpoints" / "best").epoch
    segments = sorted((out / "wandb").glob("offline-run-*"))
    assert len(segments) == len(faults) + (not finished) and len({p.name.rsplit("-", 1)[1] for p in segments}) == 1
    history = [h for run in segments for h in wandb_history(run)]
    epochs = [(h["epoch"], h["_step"]) for h in history if "psnr_y" in h]
    assert sorted(epochs) == [(1, STEPS // 2), (2, STEPS)]  # each epoch exactly once, on the optimizer-step axis
    # The loss curve continues on one step axis: the last segment logs from its checkpoint's step on (and the
    # checkpoint's own step first when it restores that step's row).
    if not finished:
        final = [h["_step"] for h in wandb_history(segments[-1]) if "train/loss" in h]
        resumed_at = int(re.search(r"resuming at step (\d+)", proc.stdout).group(1))
        assert final in (list(range(resumed_at + 1, STEPS + 1)), list(range(resumed_at, STEPS + 1)))


def launcher_status(processes: int, sig: signal.Signals) -> int:
    """`accelerate launch`'s exit status after `sig` (as Popen reports it: -N for a death by signal N), by version:
    docs/faults.md's launcher table."""
    if not NEW_LAUNCHER:  # 1.15: the 1-process launcher dies by the signal, torchrun's agent raises (status 1)
        return -sig if processes == 1 else 1
    if processes == 1:  # 1.16: SIGTERM ends it with 128 + 15 after its process tree; SIGUSR1 still kills it
        return 128 + sig if sig == signal.SIGTERM else -sig
    return 128 + sig  # torchrun's SignalException, passed on as 128 + N


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_stop_and_requeue_through_the_launcher(reference, photo_folder, tmp_path, sig):
    """SIGTERM or SIGUSR1 to `accelerate launch` with 1 process (1.15: the launcher dies by either at once and the
    trainer hears of it by PDEATHSIG, as SIGTERM; 1.16: SIGTERM reaches the trainer from the launcher, which
    SIGKILLs it 5 s later) stops the trainer at the current step with a checkpoint, the marker, its stop line in the
    launcher's log and exit 75; no process is left; the resumed run ends bit-identical to the uninterrupted one."""
    out = tmp_path / "run"
    worker, launcher = paused_launch(1, job(photo_folder, out), tmp_path, "pause:step:3")
    launcher.send_signal(sig)
    assert launcher.wait(timeout=60) == launcher_status(1, sig)
    wait_gone(worker)
    assert "srtrain: stopped by SIGTERM at step 3 (epoch 1, batch 3)" in launcher.stderr.read()
    stopped = json.loads(RunDir(out).stopped.read_text())
    assert stopped["exit_code"] == EXIT_RESUMABLE and stopped["signal"] == "SIGTERM" and stopped["step"] == 3
    assert stopped["epochs_done"] == 0  # stopped in epoch 1
    state = read_state(out / "checkpoints" / "last")
    assert (state.step, state.batches_done) == (3, 3)
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not RunDir(out).stopped.exists()
    assert_identical(out, reference)


def test_a_save_slower_than_the_launchers_grace_still_completes(reference, photo_folder, tmp_path):
    """accelerate 1.16's launcher SIGKILLs its process tree 5 s after SIGTERM, however long the save. The trainer
    saves from a process forked after that tree was listed: here its save is held in the middle (the fault hook)
    until the launcher has exited, and still completes: the checkpoint at the step, the marker, the stop line in
    the launcher's log, 75; nothing left running. The resumed run ends bit-identical to the uninterrupted one."""
    out = tmp_path / "run"
    trainer, launcher = paused_launch(1, job(photo_folder, out), tmp_path, "pause:step:3,pause:checkpoint:3")
    launcher.send_signal(signal.SIGTERM)
    ready, deadline = tmp_path / READY_FILE, time.monotonic() + 60
    while not ready.exists() or ready.read_text() in ("", str(trainer)):  # the checkpoint writer pauses in turn
        assert time.monotonic() < deadline
        time.sleep(0.1)
    saver = int(ready.read_text())
    assert launcher.wait(timeout=60) == launcher_status(1, signal.SIGTERM)
    assert Path(f"/proc/{saver}").exists() and not RunDir(out).stopped.exists()  # the save outlived the launcher
    ready.unlink()
    wait_gone(saver)
    wait_gone(trainer)
    assert "srtrain: stopped by SIGTERM at step 3 (epoch 1, batch 3)" in launcher.stderr.read()
    assert json.loads(RunDir(out).stopped.read_text())["step"] == 3
    assert read_state(out / "checkpoints" / "last").step == 3
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, reference)


def test_a_signal_during_validation_saves_the_epochs_last_step(reference, photo_folder, tmp_path):
    """One process, a signal while the main thread is busy outside a step (here: held in epoch 1's validation):
    the watcher saves at once what the state is, the epoch's last step, without waiting for the main thread; the
    resume validates epoch 1 without training it again and ends bit-identical, each epoch once in metrics.jsonl."""
    out = tmp_path / "run"
    trainer = paused_srtrain(job(photo_folder, out), tmp_path, "pause:validation:1", "disabled")
    trainer.send_signal(signal.SIGTERM)
    _, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode == EXIT_RESUMABLE, stderr[-3000:]
    assert "srtrain: stopped by SIGTERM at step 4 (epoch 1, batch 4)" in stderr
    state = read_state(out / "checkpoints" / "last")
    assert (state.step, state.epoch, state.batches_done) == (STEPS // 2, 0, STEPS // 2)
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, reference)
    assert [r["epoch"] for r in metrics(out)] == [1, 2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_two_processes_stop_together_on_a_signal(reference, photo_folder, tmp_path, sig):
    """2 processes: the launcher forwards SIGTERM (and SIGUSR1 with PET_SIGNALS_TO_HANDLE, as docs/faults.md says),
    both ranks agree in the step's collective, one checkpoint, the marker; the launcher itself exits after its
    workers (1 with accelerate 1.15, 128 + N with 1.16), leaving none. Resumed, the run matches 1 process within
    float tolerance."""
    out = tmp_path / "run"
    args = job(photo_folder, out, "--batch_size=4")
    worker, launcher = paused_launch(2, args, tmp_path, "pause:step:5")
    launcher.send_signal(sig)
    assert launcher.wait(timeout=120) == launcher_status(2, sig)
    wait_gone(worker)
    stopped = f"srtrain: stopped by {signal.Signals(sig).name} at step 5"
    assert launcher.stderr.read().count(stopped) == 2  # both ranks, 75 each
    assert json.loads(RunDir(out).stopped.read_text())["step"] == 5
    assert read_state(out / "checkpoints" / "last").step == 5
    env = {**os.environ, "WANDB_MODE": "disabled", "ACCELERATE_USE_CPU": "1", "SRTRAIN_FAULT": ""}
    cmd = [*accelerate_launch(2), MAIN, *args, "--resume=auto"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w, ref = weights(out), weights(reference)
    for name in ref:
        torch.testing.assert_close(w[name], ref[name], rtol=1e-4, atol=2e-5)


def paused_launch(processes: int, args: list[str], cwd: Path, fault: str) -> tuple[int, subprocess.Popen]:
    """`accelerate launch` paused at a step by the fault hook: (the main worker's pid, the launcher)."""
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "ACCELERATE_USE_CPU": "1",
        "SRTRAIN_FAULT": fault,
        "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
    }
    launcher = subprocess.Popen(
        [*accelerate_launch(processes), MAIN, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return wait_paused(launcher, cwd), launcher


def wait_paused(proc: subprocess.Popen, cwd: Path) -> int:
    """Poll until the fault hook has paused the run (it writes its pid to READY_FILE in `cwd`); that pid."""
    ready, deadline = cwd / READY_FILE, time.monotonic() + 180
    while not ready.exists() or not ready.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    return int(ready.read_text())


def paused_srtrain(args: list[str], cwd: Path, fault: str, wandb: str) -> subprocess.Popen:
    """`python -m srtrain` (one process, no launcher) paused at `fault` by the fault hook."""
    env = {**os.environ, "WANDB_MODE": wandb, "SRTRAIN_FAULT": fault}
    cmd = [sys.executable, "-m", "srtrain", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_paused(proc, cwd)
    return proc


def wait_gone(pid: int) -> None:
    """The trainer exits on its own (no orphan left training): poll until its pid is gone."""
    deadline = time.monotonic() + 120
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, f"trainer {pid} still running: an orphan"
        time.sleep(0.1)


def children_named(pid: int, name: str) -> list[int]:
    """The pids of process `pid`'s children whose command is `name` (/proc: no pgrep needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            comm, rest = stat.read_text().rsplit(")", 1)  # "PID (COMM) STATE PPID ..."
            if comm.split("(", 1)[1] == name and int(rest.split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_when_slurm_stops_w_b_too_training_still_saves_its_step(reference, photo_folder, tmp_path):
    """scancel and scontrol requeue SIGTERM every process of the job, W&B's service (in a session of its own)
    among them: W&B failing must not stop the trainer from saving its step, writing the marker and exiting 75.
    The resume then ends as the uninterrupted run, each epoch once in W&B."""
    out = tmp_path / "run"
    trainer = paused_srtrain(job(photo_folder, out), tmp_path, "pause:step:3", "offline")
    (service,) = children_named(trainer.pid, "wandb-core")
    os.kill(service, signal.SIGTERM)
    wait_gone(service)
    trainer.send_signal(signal.SIGTERM)
    stdout, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode == EXIT_RESUMABLE, stderr[-3000:]
    assert "warning: W&B failed" in stdout and "training goes on" in stdout
    assert json.loads(RunDir(out).stopped.read_text())["step"] == 3
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, reference)
    segments = sorted((out / "wandb").glob("offline-run-*"))
    epochs = [h["epoch"] for run in segments for h in wandb_history(run) if "psnr_y" in h]
    assert sorted(epochs) == [1, 2]


def test_a_warning_signal_after_training_is_done_is_ignored(photo_folder, tmp_path):
    """SLURM's time-limit warning (USR1) can come after training ended, while the process exits: the interpreter's
    exit restores default actions, so USR1 would kill the finished run and the batch script requeue it. Once done,
    USR1/USR2 are ignored (asserted on the kernel's record of the process), and the run ends with 0, no marker."""
    out = tmp_path / "run"
    trainer = paused_srtrain(job(photo_folder, out, "--epochs=1"), tmp_path, "pause:exit:1", "disabled")
    status = Path(f"/proc/{trainer.pid}/status").read_text()
    ignored = int(re.search(r"SigIgn:\s*([0-9a-f]+)", status).group(1), 16)
    assert all(ignored >> (sig - 1) & 1 for sig in (signal.SIGUSR1, signal.SIGUSR2))
    trainer.send_signal(signal.SIGUSR1)
    (tmp_path / READY_FILE).unlink()
    _, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode == 0, stderr[-3000:]
    assert not RunDir(out).stopped.exists() and [r["epoch"] for r in metrics(out)] == [1]


def test_a_kill_before_the_first_checkpoint_then_resume_starts_the_run_over(reference, photo_folder, tmp_path):
    """Preempted early in epoch 1, the run directory holds a config.yaml and no checkpoint: `--resume=auto` (what a
    requeued job runs) starts the same job over there, and ends as the uninterrupted run; another job is refused."""
    out = tmp_path / "run"
    proc = srtrain(job(photo_folder, out), tmp_path, "kill:step:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (out / "config.yaml").is_file() and not (out / "checkpoints").exists()
    other = srtrain(job(photo_folder, out, "--resume=auto", "--lr=0.001"), tmp_path)
    assert other.returncode == 2 and "no checkpoint yet whose configuration differs in lr: 0.002 -> 0.001" in " ".join(
        other.stderr.split()
    )
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "has no checkpoint yet: the run starts over there" in " ".join(proc.stdout.split())
    assert_identical(out, reference)
    segments = sorted((out / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and len({p.name.rsplit("-", 1)[1] for p in segments}) == 1  # one W&B run, no orphan
    epochs = [h["epoch"] for run in segments for h in wandb_history(run) if "psnr_y" in h]
    assert sorted(epochs) == [1, 2]


def test_gradient_accumulation_resumes_mid_epoch_exactly(photo_folder, tmp_path):
    """grad_accum=3 over 4 batches an epoch: optimizer steps after batches 3 and 4. Killed with 3 batches of epoch 1
    done (after step 1's checkpoint) and again in epoch 2, the resumed run ends as the straight one, bit for bit."""
    accumulate = "--grad_accum=3"
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert srtrain(job(photo_folder, straight, accumulate), tmp_path, wandb="disabled").returncode == 0
    for i, fault in enumerate(("kill:step:2", "kill:step:4")):
        args = job(photo_folder, out, accumulate, *(["--resume=auto"] if i else []))
        assert srtrain(args, tmp_path, fault, wandb="disabled").returncode == -signal.SIGKILL, fault
    proc = srtrain(job(photo_folder, out, accumulate, "--resume=auto"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(out, straight)
    assert [(r["step"], r["lr"]) for r in metrics(out)] == [(r["step"], r["lr"]) for r in metrics(straight)]


def test_second_sigint_exits_at_once():
    code = (
        "import os, signal, time\n"
        "from srtrain.stopping import Stopper\n"
        "s = Stopper(0); s.install()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "while not s.signal_name: time.sleep(0.01)\n"
        "print(s.signal_name, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stdout.strip() == "SIGINT"


def test_resume_auto_never_starts_a_trained_run_over(photo_folder, tmp_path):
    """`checkpoints/last` and `last.old` gone (a clean-up), but the run trained (`best`, metrics rows, samples):
    `--resume=auto` must not start it over on top of that. It is refused by name, with the way on from `best`,
    which then continues the run in its directory."""
    out = tmp_path / "run"
    assert srtrain(job(photo_folder, out, "--epochs=1"), tmp_path, wandb="disabled").returncode == 0
    for name in ("last", "last.old"):
        shutil.rmtree(out / "checkpoints" / name, ignore_errors=True)
    before = (out / "metrics.jsonl").read_text()
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path, wandb="disabled")
    best = out / "checkpoints" / "best"
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "it trained (checkpoints/best, metrics.jsonl, samples/)" in proc.stderr
    assert f"--resume={best} --output_dir={out}" in proc.stderr
    assert (out / "metrics.jsonl").read_text() == before and read_state(best).epoch == 1
    proc = srtrain(job(photo_folder, out, f"--resume={best}"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["epoch"] for r in metrics(out)] == [1, 2] and read_state(out / "checkpoints" / "last").epoch == 2


def test_resuming_a_finished_run_says_so_and_adds_no_wandb_segment(reference, tmp_path, photo_folder):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    segments = sorted((out / "wandb").glob("offline-run-*"))
    proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"srtrain: {out} already finished (epoch 2 of 2" in proc.stdout and "raise --epochs" in proc.stdout
    assert sorted((out / "wandb").glob("offline-run-*")) == segments


def test_a_resume_with_another_data_size_says_the_schedule_changes(photo_folder, tmp_path):
    """data.train may change on a resume (docs/faults.md); when the epoch's length changes with it, so does the
    learning-rate schedule: one line says so."""
    out, more = tmp_path / "run", tmp_path / "more"
    shutil.copytree(photo_folder, more)
    for image in list(more.glob("*.png"))[:2]:
        shutil.copy(image, more / f"copy_{image.name}")
    assert srtrain(job(photo_folder, out), tmp_path, "kill:step:3", wandb="disabled").returncode == -signal.SIGKILL
    proc = srtrain(job(more, out, "--resume=auto"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: the training data now makes 6 batches per epoch where the checkpoint's run had 4" in proc.stdout


def test_an_unreachable_wandb_server_leaves_the_run_offline(photo_folder, tmp_path):
    """WANDB_MODE=online and a server that does not answer: after a bounded wait (WANDB_INIT_TIMEOUT, 30 s unless
    set) the run goes on offline with one warning, no traceback, and its W&B files hold every epoch."""
    out = tmp_path / "run"
    env = {
        **os.environ,
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nobody listens there
        "WANDB_API_KEY": "x" * 40,
        "WANDB_INIT_TIMEOUT": "3",
    }
    cmd = [sys.executable, "-m", "srtrain", *job(photo_folder, out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: W&B could not start online" in proc.stdout and "running offline" in proc.stdout
    assert "Traceback" not in proc.stderr
    (segment,) = (out / "wandb").glob("offline-run-*")
    assert sorted(h["epoch"] for h in wandb_history(segment) if "psnr_y" in h) == [1, 2]


def test_damaged_last_checkpoint_falls_back_to_the_previous(reference, photo_folder, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    model = out / "checkpoints" / "last" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])  # truncated
    assert "truncated" in checkpoint_problem(out / "checkpoints" / "last")
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=3"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "damaged checkpoint passed over" in proc.stdout and "last.old" in proc.stdout
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3]

    old = out / "checkpoints" / "last.old" / "training_state.pt"
    old.write_bytes(old.read_bytes()[:10] + b"x" + old.read_bytes()[11:])  # corrupt, same size
    last = out / "checkpoints" / "last" / "manifest.json"
    last.unlink()
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=4"), tmp_path, wandb="disabled")
    assert proc.returncode == 2
    assert "no complete checkpoint" in proc.stderr and "checksum" in proc.stderr and "manifest" in proc.stderr


def test_a_cut_off_metrics_line_and_a_damaged_manifest_do_not_block_the_resume(reference, photo_folder, tmp_path):
    """A full disk cut the last row of metrics.jsonl; the manifest of `last` is JSON of the wrong shape; a file
    lies where `last.tmp` goes. The resume warns, drops the cut row (the checkpoint holds its epoch's row), falls
    back to `last.old`, writes its checkpoints all the same, and continues."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    rows = out / "metrics.jsonl"
    rows.write_text(rows.read_text()[:-40])  # epoch 2's row cut off
    (out / "checkpoints" / "last" / "manifest.json").write_text("[]")
    assert "is not a manifest" in checkpoint_problem(out / "checkpoints" / "last")
    (out / "checkpoints" / "last.tmp").write_text("not a folder")
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=3"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "line(s) [2] are not whole rows" in proc.stdout and "damaged checkpoint passed over" in proc.stdout
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3] and read_state(out / "checkpoints" / "last").epoch == 3


@pytest.mark.parametrize("damage", ["file_in_the_way", "lock_is_a_folder", "samples_is_a_file"])
def test_a_run_directory_that_cannot_be_written_is_named_in_one_line(reference, photo_folder, tmp_path, damage):
    """A new run under a file, or with `.lock` a folder; a resume whose `samples` became a file."""
    out, extra = tmp_path / "run", []
    if damage == "file_in_the_way":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    elif damage == "lock_is_a_folder":
        (out / ".lock").mkdir(parents=True)
    else:
        shutil.copytree(reference, out)
        shutil.rmtree(out / "samples")
        (out / "samples").write_text("x")
        extra = ["--resume=auto", "--epochs=3"]
    proc = srtrain(job(photo_folder, out, *extra), tmp_path, wandb="disabled")
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and ("output_dir" in line or "samples" in line) and "Traceback" not in line


def test_an_unreadable_wandb_segment_does_not_block_the_resume(tmp_path, capsys):
    """A resume asks W&B's reader which epochs a killed segment holds; a garbled `.wandb` file it cannot read
    means "log them again" (a warning), not a failed resume, and is read again next time (not cached)."""
    segment = tmp_path / "wandb" / "offline-run-20260101_000000-abc"
    segment.mkdir(parents=True)
    (segment / "run-abc.wandb").write_bytes(random.Random(0).randbytes(3000))
    assert wandb_epochs(RunDir(tmp_path), "abc") == set()
    assert f"W&B cannot read {segment}" in " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "wandb" / WANDB_EPOCHS).read_text()) == {}


def test_one_run_one_directory(reference, photo_folder, tmp_path):
    """A new run refuses a directory holding another run; a second writer is locked out; a resume that would
    change what is trained is refused with the differences; the run's config.yaml is never rewritten."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    config = (out / "config.yaml").read_text()
    proc = srtrain(job(photo_folder, out), tmp_path, wandb="disabled")
    assert proc.returncode == 2 and "holds another run" in proc.stderr and "--resume=auto" in proc.stderr
    proc = srtrain(job(photo_folder, out, "--resume=auto", "--batch_size=4", "--patch_size=32"), tmp_path)
    assert proc.returncode == 2
    assert "batch_size: 8 -> 4" in proc.stderr and "patch_size: 48 -> 32" in proc.stderr
    with open(out / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = srtrain(job(photo_folder, out, "--resume=auto", "--epochs=3"), tmp_path, wandb="disabled")
    assert proc.returncode == 2 and "in use by another srtrain process" in proc.stderr
    assert (out / "config.yaml").read_text() == config
    assert [r["epoch"] for r in metrics(out)] == [1, 2]


@contextlib.contextmanager
def small_disk(path: Path):
    """A real 16 MiB tmpfs at `path` (root can mount one); None where mounting is not permitted."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)], capture_output=True)
    try:
        yield path if mounted.returncode == 0 else None
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("room", [0, 200 * 1024], ids=["weights", "optimizer_state"])
def test_full_disk_keeps_the_previous_checkpoint(photo_folder, tmp_path, room):
    """The disk fills while the job is paused (all of it, or all but room for the weights file, so that torch's zip
    writer of the optimizer state is the one to fail: a RuntimeError, not an OSError); its stop checkpoint fails:
    one line, no traceback, no partial `last.tmp` left, the previous checkpoint intact and resumable once space is
    freed. Without permission to mount, the write fails at the same place through the fault hook's ENOSPC."""
    with small_disk(tmp_path / "disk") as disk:
        out = (disk or tmp_path) / "run"
        if disk is None:
            proc = srtrain(job(photo_folder, out), tmp_path, "enospc:checkpoint:3", wandb="disabled")
        else:
            trainer = paused_srtrain(job(photo_folder, out), tmp_path, "pause:step:3", "disabled")
            stat = os.statvfs(disk)
            with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - room))
            trainer.send_signal(signal.SIGTERM)
            stdout, stderr = trainer.communicate(timeout=120)
            proc = subprocess.CompletedProcess(trainer.args, trainer.returncode, stdout, stderr)
            (disk / "filler").unlink()
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "could not write checkpoint" in proc.stderr and "intact" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
        assert checkpoint_problem(out / "checkpoints" / "last") == ""
        assert read_state(out / "checkpoints" / "last").step == 2
        assert not (out / "checkpoints" / "last.tmp").exists()
        proc = srtrain(job(photo_folder, out, "--resume=auto"), tmp_path, wandb="disabled")
        assert proc.returncode == 0, proc.stderr[-3000:]


def test_nan_policy_skip_counts_then_stops(photo_folder, tmp_path):
    proc = srtrain(
        job(photo_folder, tmp_path / "run", "--lr=1e20", "--loss=mse", "--nan_policy=skip", "--nan_max_skips=2"),
        tmp_path,
        wandb="disabled",
    )
    assert proc.returncode == 1
    assert "3 steps in a row" in proc.stderr and "last good checkpoint" in proc.stderr

"""One run, one directory: which directory and checkpoint a job uses, the lock that keeps out a second writer,
the refusal to write into another run, and the repairs a resume makes after a kill (metrics.jsonl, `best`, the
epoch rows a killed segment's W&B file lost).

A run directory holds `config.yaml` (written once, by the run that created it), `metrics.jsonl`, `samples/`,
`checkpoints/{last,best}`, `wandb/` and, while a process trains in it, a lock on `.lock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import yaml
from accelerate.utils import broadcast_object_list

from srtrain.checkpoint import TrainState, checkpoint_problem, copy_checkpoint, is_checkpoint, read_state
from srtrain.config import Config, ConfigError
from srtrain.files import remove, write_text_atomically
from srtrain.stopping import STOPPED_FILE
from srtrain.tracking import agent_run_dir, console

LOCK_FILE = ".lock"
WANDB_EPOCHS = "srtrain-epochs.json"  # in OUTPUT_DIR/wandb: the epoch rows each finished W&B segment holds
WRITER_WAIT_S = 120  # the longest a resume waits for a killed trainer's W&B service to let go of its file
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "samples", "wandb")
# Keys a resume may change: how long to train, where to log and read data, how often to save or validate.
RESUMABLE_CHANGES = {
    "epochs",
    "time_budget_min",
    "output_dir",
    "resume",
    "init_from",
    "num_samples",
    "val_every",
    "cpu_threads",
    "checkpoint_every",
    "checkpoint_every_min",
    "data.train",
    "data.val",
    "data.num_workers",
    "data.cache",
    "data.max_val_images",
}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`data.*` and `wandb.*` as keys of their own; unlike `config._flatten`, the model stays one value, so that
    the options of the default model never count as differences of a run with another model."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix and k in ("data", "wandb"):
            out.update(_flat(v, k + "."))
        else:
            out[prefix + k] = v
    return out


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: saved -> now` for every setting that a resume may not change (W&B settings may). A key that the
    saved config lacks (added to srtrain after it was written) counts as its default."""
    a, b = _flat(Config().to_dict()) | _flat(saved), _flat(now)
    keys = sorted((a.keys() | b.keys()) - RESUMABLE_CHANGES)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if not k.startswith("wandb.") and a.get(k) != b.get(k)]


def resolve_output_dir(cfg: Config) -> Path:
    """The run directory: `--output_dir`, a sweep agent's run directory, the latest matching run for
    `--resume=auto`, or a new one."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if (agent_dir := agent_run_dir()) is not None:
        return agent_dir
    prefix = f"{cfg.model.name}_x{cfg.scale}_"
    if cfg.resume == "auto":
        runs = sorted(p for p in Path("runs").glob(prefix + "*") if (p / "checkpoints").is_dir())
        if runs:
            return runs[-1]
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    broadcast_object_list(stamp)
    return Path("runs") / (prefix + stamp[0])


def _good_checkpoint(folder: Path, what: str) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint among `last`, `last.old` of a checkpoints folder, and what was wrong."""
    problems = []
    for name in ("last", "last.old"):
        path = folder / name
        if not path.exists():
            continue
        problem = checkpoint_problem(path)
        if not problem:
            return path, problems
        problems.append(problem)
    if problems:
        raise ConfigError(f"resume: no complete checkpoint in {what}: {'; '.join(problems)}")
    return None, problems


def resume_path(cfg: Config, out_dir: Path) -> tuple[Path | None, list[str]]:
    """The checkpoint to continue from (None: a fresh start) and the damaged newer ones passed over."""
    if cfg.resume == "auto":
        return _good_checkpoint(out_dir / "checkpoints", str(out_dir))
    if not cfg.resume:
        return None, []
    path = Path(cfg.resume)
    if (path / "checkpoints").is_dir():
        found, problems = _good_checkpoint(path / "checkpoints", str(path))
        if found is None:
            raise ConfigError(f"resume: '{cfg.resume}' holds no checkpoint")
        return found, problems
    if not is_checkpoint(path):
        raise ConfigError(f"resume: '{cfg.resume}' holds no checkpoint (model.safetensors + training_state.pt)")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"resume: checkpoint '{cfg.resume}' is damaged: {problem}")
    return path, []


def check_resumable(cfg: Config, ckpt: Path, global_batch: int) -> None:
    """A checkpoint continues only the same job: other settings would silently change what is trained (a new
    global batch or patch size changes the steps per epoch, and with them the learning-rate schedule). The
    global batch may be split differently, e.g. over another number of processes."""
    saved = yaml.safe_load((ckpt / "config.yaml").read_text())
    changed = config_differences(saved, cfg.to_dict())
    saved_global = read_state(ckpt).global_batch
    if saved_global == global_batch:
        changed = [c for c in changed if not c.startswith(("batch_size:", "grad_accum:"))]
    else:
        changed.append(f"global batch (batch_size x processes x grad_accum): {saved_global} -> {global_batch}")
    if changed:
        raise ConfigError(
            f"resume: the configuration differs from checkpoint {ckpt}'s in {', '.join(changed)}; resume with the "
            f"checkpoint's values (only {', '.join(sorted(RESUMABLE_CHANGES - {'output_dir', 'resume'}))} and "
            "wandb.* may change) or start a new run with another --output_dir"
        )


@dataclass
class RunDir:
    """The claimed run directory of this job (main process holds the lock) and the checkpoint it resumes."""

    path: Path
    ckpt: Path | None
    continues: bool  # the checkpoint is this directory's own: same W&B run, same config.yaml
    skipped: list[str]
    lock: IO[str] | None = None
    wandb_run_id: str = ""  # a run started over: the W&B run of its attempt that died before its first checkpoint
    made: tuple[str, ...] = ()  # what this job created here ("" for the directory itself): `discard` removes it

    def discard(self) -> None:
        """After a failed start (this process claimed the directory, nothing trained): remove what this job created
        here. Nothing in it could be resumed, and it would block the corrected command ("holds another run")."""
        if self.lock is None or self.ckpt is not None or (self.path / "checkpoints").exists():
            return
        for name in ("",) if "" in self.made else self.made:
            with contextlib.suppress(OSError):
                remove(self.path / name)


def _claim(out_dir: Path, continues: bool) -> IO[str]:
    """Lock `out_dir` for this run's life; refuse a directory that holds another run, unless this job continues
    it (or starts it over: `starts_over`), and one it cannot write in."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)  # (`open_run` noted whether it existed)
        lock = open(out_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the run's life, closed by the OS)
    except OSError as err:  # a file in the way, a read-only or full file system
        raise ConfigError(
            f"output_dir {out_dir}: cannot write there ({err.strerror}: {err.filename}); pick another --output_dir"
            + (" or free space" if err.errno == errno.ENOSPC else "")
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise ConfigError(
            f"output_dir {out_dir} is in use by another srtrain process (pid {lock.read().strip() or '?'}); "
            "wait for it or pick another --output_dir"
        ) from None
    if not continues:
        found = [name for name in RUN_FILES if (out_dir / name).exists()]
        if found:
            raise ConfigError(
                f"output_dir {out_dir} holds another run ({', '.join(found)}); continue it with --resume=auto, "
                "or pick another --output_dir"
            )
    lock.seek(0)
    lock.truncate()
    with contextlib.suppress(OSError):  # the pid is for the message above; a full disk must not stop the claim
        lock.write(f"{os.getpid()}\n")
        lock.flush()
    return lock


def trained_in(out_dir: Path) -> list[str]:
    """The traces of training in a run directory: complete checkpoints, metrics rows, sample grids."""
    checkpoints = out_dir / "checkpoints"
    found = [
        f"checkpoints/{p.name}" for p in sorted(checkpoints.glob("*")) if is_checkpoint(p) and not checkpoint_problem(p)
    ]
    if (out_dir / "metrics.jsonl").is_file() and (out_dir / "metrics.jsonl").stat().st_size:
        found.append("metrics.jsonl")
    if any((out_dir / "samples").glob("*.png")):
        found.append("samples/")
    return found


def _ways_on(out_dir: Path) -> str:
    """How to go on from a run directory that lost `last` and `last.old`: its complete `best` or `last.tmp`."""
    ways = []
    best, tmp = out_dir / "checkpoints" / "best", out_dir / "checkpoints" / "last.tmp"
    if is_checkpoint(best) and not checkpoint_problem(best):
        state = read_state(best)
        ways.append(
            f"continue from its best (epoch {state.epoch}, step {state.step}) with --resume={best} "
            f"--output_dir={out_dir}"
        )
    if is_checkpoint(tmp) and not checkpoint_problem(tmp):
        ways.append(f"from its complete last.tmp (step {read_state(tmp).step}): rename it to last, then --resume=auto")
    ways.append("start a new run with another --output_dir")
    return "Either " + "; or ".join(ways)


def starts_over(cfg: Config, out_dir: Path) -> bool:
    """`--resume=auto` of a run that stopped before its first checkpoint (a kill or a preemption early in epoch 1):
    nothing to continue, so the same job starts over in its directory; a changed configuration is refused."""
    saved = out_dir / "config.yaml"
    if cfg.resume != "auto" or not saved.is_file():
        return False
    if progress := trained_in(out_dir):
        raise ConfigError(
            f"resume: {out_dir} has no checkpoints/last or last.old to continue from, but it trained "
            f"({', '.join(progress)}): starting it over there would overwrite that. {_ways_on(out_dir)}"
        )
    changed = config_differences(yaml.safe_load(saved.read_text()), cfg.to_dict())
    if changed:
        raise ConfigError(
            f"resume: {out_dir} holds a run with no checkpoint yet whose configuration differs in "
            f"{', '.join(changed)}; start it over with its own values or pick another --output_dir"
        )
    return True


def open_run(cfg: Config, main: bool, global_batch: int) -> RunDir:
    """Decide and claim the run directory on the main process; every process gets the same answer or error."""
    out_dir = resolve_output_dir(cfg)
    ckpt, skipped = resume_path(cfg, out_dir)
    continues = ckpt is not None and ckpt.parent.resolve() == (out_dir / "checkpoints").resolve()
    if ckpt is not None:
        check_resumable(cfg, ckpt, global_batch)
    error, lock, earlier_id, made = [""], None, "", ()
    if main:
        try:
            again = ckpt is None and starts_over(cfg, out_dir)
            made = ("",) if not out_dir.exists() else tuple(n for n in RUN_FILES if not (out_dir / n).exists())
            lock = _claim(out_dir, continues or again)
            if again:
                console.print(f"[bold yellow]note:[/] {out_dir} has no checkpoint yet: the run starts over there")
                earlier_id = _only_wandb_run(out_dir)
        except ConfigError as err:
            error = [str(err)]
    broadcast_object_list(error)
    if error[0]:
        raise ConfigError(error[0])
    return RunDir(out_dir, ckpt, continues, skipped, lock, earlier_id, made)


def _only_wandb_run(out_dir: Path) -> str:
    """The id of the one W&B run in `out_dir/wandb` ('' for none or several). A run started over keeps it: the
    attempt that died logged the same first steps (same seed), so W&B shows one run, not an orphan beside it."""
    ids = {p.name.rsplit("-", 1)[1] for p in (out_dir / "wandb").glob("*run-*") if p.is_dir()}
    return ids.pop() if len(ids) == 1 else ""


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of a `metrics.jsonl` and the numbers of its lines that are not whole rows (a write cut off by a
    full disk or a kill): those are skipped, never fatal."""
    rows, damaged = [], []
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
        elif line.strip():
            damaged.append(number)
    return rows, damaged


def repair_after_kill(run: RunDir, state: TrainState, use_wandb: bool) -> list[dict[str, Any]]:
    """Make the directory agree with the checkpoint resumed (main process): metrics.jsonl keeps each finished
    epoch once, and only those the checkpoint has (its own row is added when a kill came before its metrics line);
    `best` is the best epoch's checkpoint (a kill may have come before its copy); no stale stop marker. Returns
    the rows of metrics.jsonl (with their `step`) that none of the run's W&B segments holds: the caller logs them."""
    (run.path / STOPPED_FILE).unlink(missing_ok=True)
    metrics = run.path / "metrics.jsonl"
    rows, damaged = read_metrics(metrics)
    if damaged:
        console.print(
            f"[bold yellow]warning:[/] {metrics}: line(s) {damaged} are not whole rows (a write cut off by a full disk "
            "or a kill); rewritten without them (the checkpoint's own epoch row is kept)"
        )
    kept = {r["epoch"]: r for r in reversed(rows) if r["epoch"] <= state.epoch}
    if state.epoch_row and state.epoch not in kept:
        kept[state.epoch] = {"epoch": state.epoch, "step": state.step, **state.epoch_row}
    lines = [json.dumps(kept[e]) + "\n" for e in sorted(kept)]
    if damaged or lines != [json.dumps(r) + "\n" for r in rows]:
        write_text_atomically(metrics, "".join(lines))
    best = run.path / "checkpoints" / "best"
    best_epoch = read_state(best).epoch if not checkpoint_problem(best) else -1
    if run.continues and state.best_epoch == state.epoch and best_epoch != state.epoch:
        copy_checkpoint(run.ckpt, best)
    if not use_wandb or not kept:
        return []
    logged = wandb_epochs(run.path, state.wandb_run_id)
    return [kept[e] for e in sorted(kept) if e not in logged and "step" in kept[e]]


def _held_open(files: list[Path]) -> bool:
    """Whether some process has one of `files` open (Linux's /proc; elsewhere nothing is found)."""
    targets = {str(f.resolve()) for f in files}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) in targets:
                return True
    return False


def _epochs_in(segment: Path) -> list[int] | None:
    """The epochs whose row a W&B segment's `.wandb` file holds, read by W&B's own reader (a killed segment's
    file is read up to its last whole record); None, with a warning, when the reader fails."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(segment)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
            env={**os.environ, "WANDB_MODE": "offline"},  # a local file: nothing to report to a server
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        reason = (getattr(err, "stderr", "") or "").strip().splitlines()[-1:] or [str(err)]
        console.print(
            f"[bold yellow]warning:[/] W&B cannot read {segment} ({reason[0]}); the epochs it may hold are logged "
            "again, so W&B may show some twice (metrics.jsonl has each once)"
        )
        return None
    items = (json.loads(line).get("history", {}).get("item", {}) for line in proc.stdout.splitlines())
    return sorted({int(item["epoch"]) for item in items if "epoch" in item})


def wandb_epochs(run_dir: Path, run_id: str) -> set[int]:
    """The epochs whose row some W&B segment of run `run_id` holds (call before this segment's W&B run starts).
    A killed trainer's W&B service may still hold its file open, and write rows it buffered, until it notices
    the death (about a second): wait until no process has a segment's file open, so that what is read is final.
    Each finished segment is read once (about 1 s); what it holds is kept in `wandb/srtrain-epochs.json`."""
    wandb_dir = run_dir / "wandb"
    segments = sorted(p for p in wandb_dir.glob(f"*run-*-{run_id}") if p.is_dir() and any(p.glob("*.wandb")))
    cache_file = wandb_dir / WANDB_EPOCHS
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    new = [s for s in segments if s.name not in cache]
    files = [f for s in new for f in s.glob("*.wandb")]
    deadline = time.monotonic() + WRITER_WAIT_S
    while held := _held_open(files):
        if time.monotonic() > deadline:
            console.print(f"[bold yellow]warning:[/] a process still writes {files}; W&B may hold an epoch twice")
            break
        time.sleep(0.1)
    read = {segment.name: _epochs_in(segment) for segment in new}
    if new and not held:  # final: never read again (an unreadable segment is tried again at the next resume)
        cache |= {name: epochs for name, epochs in read.items() if epochs is not None}
        write_text_atomically(cache_file, json.dumps(cache, indent=1))
    return {e for epochs in (cache | read).values() for e in epochs or []}

"""One run, one directory: its layout (`RunDir`), the names of new runs, which checkpoint a job continues, the lock
that keeps out a second writer, the refusal to write into another run, and the repairs a resume makes after a kill
(metrics.jsonl, `best`).

A run directory holds `config.yaml` (written once, by the run that created it), `metrics.jsonl`, `samples/`,
`checkpoints/{last,best}` (`last.old`, the one `last` replaced; `last.tmp` while a save is being written),
`wandb/`, `stopped.json` while its last stop was a resumable one and, while a process trains in it, a lock on
`.lock`. Every other module finds these paths here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from accelerate.utils import broadcast_object_list
from torch import nn

from srtrain.checkpoint import (
    STATE_FILE,
    TrainState,
    checkpoint_problem,
    copy_checkpoint,
    is_checkpoint,
    previous,
    read_state,
    temporary,
)
from srtrain.config import CONFIG_FILE, Config, ConfigError, saved_config
from srtrain.files import remove, write_text_atomically
from srtrain.models import build_model, weights_free_options
from srtrain.models.weights import MODEL_FILE, load_model_weights

RUNS = Path("runs")  # where runs go when nothing names their directory
# Every name srtrain gives a run directory, by who starts the run: `run_dir_name` fills them in.
NAMES = {
    "new": "{model}_x{scale}_{time}",  # a run started by hand: model, scale and the start time
    "slurm": "{job_name}-{job_id}",  # a batch job (slurm/*.sbatch): requeued, it finds its run again
    "sweep": "{sweep}/{point}",  # a point of `srtrain sweep`
    "agent": "sweep-{sweep_id}/{run_id}",  # a W&B sweep agent's run
}
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


@dataclass
class RunDir:
    """A run directory's paths; for the job that claimed it (`open_run`), also the checkpoint it resumes."""

    path: Path
    ckpt: Path | None = None
    continues: bool = False  # the checkpoint is this directory's own: same W&B run, same config.yaml
    skipped: list[str] = field(default_factory=list)  # damaged newer checkpoints passed over
    lock: IO[str] | None = None
    started_over: bool = False  # it stopped before its first checkpoint: the same job starts it again
    made: tuple[str, ...] = ()  # what this job created here ("" for the directory itself): `discard` removes it

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    @property
    def wandb(self) -> Path:
        return self.path / "wandb"

    @property
    def stopped(self) -> Path:
        return self.path / "stopped.json"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def files(self) -> list[Path]:
        """What a run writes here: a directory holding one of them holds a run."""
        return [self.config, self.metrics, self.checkpoints, self.samples, self.wandb]

    def discard(self) -> None:
        """After a failed start (this process claimed the directory, nothing trained): remove what this job created
        here. Nothing in it could be resumed, and it would block the corrected command ("holds another run")."""
        if self.lock is None or self.ckpt is not None or self.checkpoints.exists():
            return
        for name in ("",) if "" in self.made else self.made:
            with contextlib.suppress(OSError):
                remove(self.path / name)


def run_dir_name(scheme: str, **parts: Any) -> Path:
    """The directory of a run that no `--output_dir` names, by `NAMES[scheme]` (`srtrain run-dir` prints the
    SLURM one for batch scripts)."""
    return RUNS / NAMES[scheme].format(**parts)


def agent_run_dir() -> Path | None:
    """Under a W&B sweep agent, its run's directory: the agent's command line names none, and one fixed per run
    lets `--resume=auto` continue a run the controller hands out again."""
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        return run_dir_name("agent", sweep_id=os.environ["WANDB_SWEEP_ID"], run_id=os.environ["WANDB_RUN_ID"])
    return None


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


def config_differences(saved: Config, now: Config) -> list[str]:
    """`key: saved -> now` for every setting that a resume may not change (W&B settings may). A key that the
    saved config lacks (added to srtrain after it was written) was read back as its default."""
    a, b = _flat(saved.to_dict()), _flat(now.to_dict())
    keys = sorted((a.keys() | b.keys()) - RESUMABLE_CHANGES)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if not k.startswith("wandb.") and a.get(k) != b.get(k)]


def resolve_output_dir(cfg: Config) -> Path:
    """The run directory: `--output_dir`, a sweep agent's run directory, the latest matching run for
    `--resume=auto`, or a new one."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if (agent_dir := agent_run_dir()) is not None:
        return agent_dir
    if cfg.resume == "auto":
        pattern = run_dir_name("new", model=cfg.model.name, scale=cfg.scale, time="*")
        runs = sorted(p for p in pattern.parent.glob(pattern.name) if RunDir(p).checkpoints.is_dir())
        if runs:
            return runs[-1]
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    broadcast_object_list(stamp)
    return run_dir_name("new", model=cfg.model.name, scale=cfg.scale, time=stamp[0])


def _good_checkpoint(run: RunDir) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint among a run's `last` and `last.old`, and what was wrong with newer ones."""
    problems = []
    for path in (run.last, previous(run.last)):
        if not path.exists():
            continue
        problem = checkpoint_problem(path)
        if not problem:
            return path, problems
        problems.append(problem)
    if problems:
        raise ConfigError(f"resume: no complete checkpoint in {run.path}: {'; '.join(problems)}")
    return None, problems


def resume_path(cfg: Config, out_dir: Path) -> tuple[Path | None, list[str]]:
    """The checkpoint to continue from (None: a fresh start) and the damaged newer ones passed over."""
    if cfg.resume == "auto":
        return _good_checkpoint(RunDir(out_dir))
    if not cfg.resume:
        return None, []
    path = Path(cfg.resume)
    if RunDir(path).checkpoints.is_dir():
        found, problems = _good_checkpoint(RunDir(path))
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
    changed = config_differences(saved_config(ckpt / CONFIG_FILE), cfg)
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


def _claim(run: RunDir, continues: bool) -> IO[str]:
    """Lock the run directory for this run's life; refuse one that holds another run, unless this job continues
    it (or starts it over: `starts_over`), and one it cannot write in."""
    try:
        run.path.mkdir(parents=True, exist_ok=True)  # (`open_run` noted whether it existed)
        lock = open(run.lock_file, "a+")  # noqa: SIM115 (held open for the run's life, closed by the OS)
    except OSError as err:  # a file in the way, a read-only or full file system
        raise ConfigError(
            f"output_dir {run.path}: cannot write there ({err.strerror}: {err.filename}); pick another --output_dir"
            + (" or free space" if err.errno == errno.ENOSPC else "")
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise ConfigError(
            f"output_dir {run.path} is in use by another srtrain process (pid {lock.read().strip() or '?'}); "
            "wait for it or pick another --output_dir"
        ) from None
    if not continues:
        found = [f.name for f in run.files() if f.exists()]
        if found:
            raise ConfigError(
                f"output_dir {run.path} holds another run ({', '.join(found)}); continue it with --resume=auto, "
                "or pick another --output_dir"
            )
    lock.seek(0)
    lock.truncate()
    with contextlib.suppress(OSError):  # the pid is for the message above; a full disk must not stop the claim
        lock.write(f"{os.getpid()}\n")
        lock.flush()
    return lock


def trained_in(run: RunDir) -> list[str]:
    """The traces of training in a run directory: complete checkpoints, metrics rows, sample grids."""
    found = [
        f"{run.checkpoints.name}/{p.name}"
        for p in sorted(run.checkpoints.glob("*"))
        if is_checkpoint(p) and not checkpoint_problem(p)
    ]
    if run.metrics.is_file() and run.metrics.stat().st_size:
        found.append(run.metrics.name)
    if any(run.samples.glob("*.png")):
        found.append(f"{run.samples.name}/")
    return found


def _ways_on(run: RunDir) -> str:
    """How to go on from a run directory that lost `last` and `last.old`: its complete `best` or `last.tmp`."""
    ways = []
    best, tmp = run.best, temporary(run.last)
    if is_checkpoint(best) and not checkpoint_problem(best):
        state = read_state(best)
        ways.append(
            f"continue from its best (epoch {state.epoch}, step {state.step}) with --resume={best} "
            f"--output_dir={run.path}"
        )
    if is_checkpoint(tmp) and not checkpoint_problem(tmp):
        ways.append(f"from its complete last.tmp (step {read_state(tmp).step}): rename it to last, then --resume=auto")
    ways.append("start a new run with another --output_dir")
    return "Either " + "; or ".join(ways)


def starts_over(cfg: Config, run: RunDir) -> bool:
    """`--resume=auto` of a run that stopped before its first checkpoint (a kill or a preemption early in epoch 1):
    nothing to continue, so the same job starts over in its directory; a changed configuration is refused."""
    if cfg.resume != "auto" or not run.config.is_file():
        return False
    if progress := trained_in(run):
        raise ConfigError(
            f"resume: {run.path} has no checkpoints/last or last.old to continue from, but it trained "
            f"({', '.join(progress)}): starting it over there would overwrite that. {_ways_on(run)}"
        )
    changed = config_differences(saved_config(run.config), cfg)
    if changed:
        raise ConfigError(
            f"resume: {run.path} holds a run with no checkpoint yet whose configuration differs in "
            f"{', '.join(changed)}; start it over with its own values or pick another --output_dir"
        )
    return True


def open_run(cfg: Config, main: bool, global_batch: int) -> RunDir:
    """Decide and claim the run directory on the main process; every process gets the same answer or error."""
    run = RunDir(resolve_output_dir(cfg))
    run.ckpt, run.skipped = resume_path(cfg, run.path)
    run.continues = run.ckpt is not None and run.ckpt.parent.resolve() == run.checkpoints.resolve()
    if run.ckpt is not None:
        check_resumable(cfg, run.ckpt, global_batch)
    error = [""]
    if main:
        try:
            run.started_over = run.ckpt is None and starts_over(cfg, run)
            exists = run.path.exists()
            run.made = tuple(f.name for f in run.files() if not f.exists()) if exists else ("",)
            run.lock = _claim(run, run.continues or run.started_over)
        except ConfigError as err:
            error = [str(err)]
    broadcast_object_list(error)
    if error[0]:
        raise ConfigError(error[0])
    return run


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


def repair_after_kill(run: RunDir, state: TrainState) -> tuple[list[dict[str, Any]], list[int]]:
    """Make the directory agree with the checkpoint resumed (main process): metrics.jsonl keeps each finished
    epoch once, and only those the checkpoint has (its own row is added when a kill came before its metrics line);
    `best` is the best epoch's checkpoint (a kill may have come before its copy); no stale stop marker. Returns
    the rows metrics.jsonl keeps and the numbers of the lines it dropped (not whole rows)."""
    run.stopped.unlink(missing_ok=True)
    rows, damaged = read_metrics(run.metrics)
    kept = {r["epoch"]: r for r in reversed(rows) if r["epoch"] <= state.epoch}
    if state.epoch_row and state.epoch not in kept:
        kept[state.epoch] = {"epoch": state.epoch, "step": state.step, **state.epoch_row}
    lines = [json.dumps(kept[e]) + "\n" for e in sorted(kept)]
    if damaged or lines != [json.dumps(r) + "\n" for r in rows]:
        write_text_atomically(run.metrics, "".join(lines))
    best_epoch = read_state(run.best).epoch if not checkpoint_problem(run.best) else -1
    if run.continues and state.best_epoch == state.epoch and best_epoch != state.epoch:
        copy_checkpoint(run.ckpt, run.best)
    return [kept[e] for e in sorted(kept)], damaged


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder from itself, or from a run directory (its `best`, else its `last`). One whose files do
    not match its manifest is refused by name, never half-loaded."""
    for candidate in (path, RunDir(path).best, RunDir(path).last):
        if is_checkpoint(candidate):
            if problem := checkpoint_problem(candidate):
                other = candidate.with_name("last") if candidate.name == "best" else previous(candidate)
                raise ValueError(
                    f"checkpoint {candidate} is damaged: {problem}; use {other} if it is "
                    "complete, or resume the run (--resume=auto) to write it again"
                )
            return candidate
    raise ValueError(f"'{path}' is not a run directory or checkpoint folder (no {MODEL_FILE} + {STATE_FILE})")


def model_from_checkpoint(path: Path, raw: bool = False) -> tuple[nn.Module, int]:
    """Rebuild a trained model from a run directory or checkpoint folder, with its weight average where it has one
    (unless `raw`): (model, scale)."""
    ckpt = find_checkpoint(path)
    cfg = saved_config(ckpt / CONFIG_FILE)
    options = cfg.model.args | weights_free_options(cfg.model.name)
    model = build_model(cfg.model.name, cfg.scale, **options)
    load_model_weights(model, ckpt, raw)
    return model, cfg.scale

"""Where results go: W&B (through accelerate's tracker), `metrics.jsonl`, sample grids and the console; and, for a
resume after a kill, what the run's W&B files already hold.

Only the main process writes. W&B runs offline by itself when no API key is configured, and its files
land under `OUTPUT_DIR/wandb/`, next to the local copies, so a run directory is complete on its own.
"""

from __future__ import annotations

import json
import netrc
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from accelerate import Accelerator
from rich.console import Console
from rich.table import Table

from srtrain.config import Config, ConfigError
from srtrain.faults import inject
from srtrain.files import append_line, first_line, write_atomically, write_text_atomically
from srtrain.rundir import RunDir
from srtrain.visual import stack

WANDB_INIT_TIMEOUT_S = 30  # the wait for a W&B server at the start (W&B's own default: 90 s); $WANDB_INIT_TIMEOUT wins
WANDB_EPOCHS = "srtrain-epochs.json"  # in the run's wandb/: the epoch rows each finished W&B segment holds
WRITER_WAIT_S = 120  # the longest a resume waits for a killed trainer's W&B service to let go of its file
WANDB_FLUSH_S = 1.0  # seconds between writes of W&B's run file; all of it is written at the end or on a stop
console = Console(soft_wrap=True)  # long lines stay whole in logs; tables still fit the width
TABLE_COLUMNS = [
    ("train", "train_loss"),
    ("val", "val_loss"),
    ("PSNR-Y", "psnr_y"),
    ("raw PSNR-Y", "raw_psnr_y"),  # with `ema`: the trained weights' (PSNR-Y is the average's)
    ("SSIM-Y", "ssim_y"),
    ("PSNR-RGB", "psnr_rgb"),
    ("lr", "lr"),
    ("sec", "epoch_time_s"),
    ("patch/s", "patches_per_s"),
]
# What a sweep may rank runs by: logged every validated epoch, in W&B history and in metrics.jsonl.
SWEEP_METRICS = ("best_psnr_y", "psnr_y", "ssim_y", "psnr_rgb", "val_loss", "train_loss")


def new_run_id() -> str:
    """A fresh run's W&B id: the one a sweep agent (or the user) put in $WANDB_RUN_ID, so that the agent's
    sweep sees the run it started; otherwise a new one. A resumed run keeps the id saved in its checkpoint."""
    return os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8]


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_mode(cfg: Config) -> str:
    """`wandb.mode` from the config, else $WANDB_MODE, else online with an API key and offline without."""
    if cfg.wandb.mode:
        return cfg.wandb.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_wandb_key() else "offline"


def abandon_wandb() -> None:
    """Let W&B go after it failed: its exit hook would otherwise talk to a service that may be gone (SIGTERMed with
    the job) and print a traceback as the process exits. What it had written stays; a resume restores the rest."""
    import wandb

    with suppress(Exception):
        wandb.teardown()


class Tracker:
    """The run's writer: call on every process; everything but the return values is main-process only."""

    def __init__(self, accelerator: Accelerator, cfg: Config, run_dir: RunDir, run_id: str) -> None:
        self.accelerator, self.run_dir = accelerator, run_dir
        self.mode = wandb_mode(cfg)
        self.use_wandb = self.mode != "disabled"
        if not accelerator.is_main_process:
            return
        try:
            run_dir.samples.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file named samples, a full disk
            raise ConfigError(f"{run_dir.samples}: {err.strerror}; make it a writable folder (or free space)") from None
        if self.use_wandb:
            import wandb

            # W&B writes its `.wandb` file every 15 s by default: a SIGKILL loses what came since (a resume restores the
            # epoch rows: `wandb_epochs`); 1 s keeps the per-step loss points of all but the last second.
            settings = {"x_transaction_log_flush_interval": WANDB_FLUSH_S}
            if "WANDB_INIT_TIMEOUT" not in os.environ:  # W&B's own default waits 90 s for an unreachable server
                settings["init_timeout"] = WANDB_INIT_TIMEOUT_S
            init = {"dir": str(run_dir.path), "id": run_id, "resume": "allow", "settings": wandb.Settings(**settings)}
            if cfg.wandb.name:
                init["name"] = cfg.wandb.name
            if cfg.wandb.entity:
                init["entity"] = cfg.wandb.entity
            if cfg.wandb.group:
                init["group"] = cfg.wandb.group
            project = os.environ.get("WANDB_PROJECT") if os.environ.get("WANDB_SWEEP_ID") else None
            project = project or cfg.wandb.project  # an agent's runs belong to its sweep's project
            self._start(project, cfg, init)
            if self.use_wandb:
                console.print(f"W&B run {run_id} ({self.mode}), files in {run_dir.wandb}")

    def _start(self, project: str, cfg: Config, init: dict[str, Any]) -> None:
        """Start the W&B run. W&B failing never stops training, from this first call on: a server that does not
        answer within the timeout leaves the run offline (`wandb sync` uploads it later), and a W&B that cannot
        start at all leaves metrics.jsonl and samples/ alone."""
        for mode in dict.fromkeys((self.mode, "offline")):
            try:
                os.environ["WANDB_MODE"] = mode
                self.accelerator.init_trackers(project, config=cfg.to_dict(), init_kwargs={"wandb": init})
                self.run, self.mode = self.accelerator.get_tracker("wandb", unwrap=True), mode
                return
            except Exception as err:
                abandon_wandb()
                self.accelerator.trackers.clear()  # the failed one stays listed, and would start again with the next
                reason = first_line(err)
                then = "running offline, `wandb sync` uploads it later" if mode != "offline" else "no W&B for this run"
                console.print(
                    f"[bold yellow]warning:[/] W&B could not start {mode} ({reason}); {then}", highlight=False
                )
        self.use_wandb = False

    def _to_wandb(self, send: Callable[[], Any]) -> None:
        """Send to W&B unless it failed before. W&B failing never stops training: SLURM's scancel or requeue
        SIGTERMs every process of the job, W&B's service among them, while the trainer still has to save its step.
        From the first failure on, only the local files are written; a resume logs the epochs W&B missed."""
        if not (self.accelerator.is_main_process and self.use_wandb):
            return
        try:
            send()
        except Exception as err:
            self.use_wandb = False
            abandon_wandb()
            console.print(
                f"[bold yellow]warning:[/] W&B failed ({type(err).__name__}: {err}); training goes on, writing "
                f"metrics.jsonl and samples/ only; a resume (--resume=auto) logs the missing epochs to W&B",
                highlight=False,
            )

    def log_step(self, step: int, values: dict[str, float], commit: bool) -> None:
        """The loss curve within epochs, on the optimizer-step axis that epoch metrics share; `commit=False`
        leaves the step open for the epoch's metrics (W&B drops what comes for a step after its commit)."""
        self._to_wandb(lambda: self.run.log(values, step=step, commit=commit))

    def log_epoch(self, metrics: dict[str, Any], epoch: int, step: int) -> None:
        """Commit epoch `epoch`'s metrics at optimizer step `step` to W&B, then append them to metrics.jsonl (synced
        to disk). A kill in between leaves the row in the checkpoint; the resume restores what either lost."""
        if not self.accelerator.is_main_process:
            return
        self._to_wandb(lambda: self.run.log({"epoch": epoch, **metrics}, step=step, commit=True))
        inject("after_log", epoch, True)
        append_line(self.run_dir.metrics, json.dumps({"epoch": epoch, "step": step, **metrics}))
        table = Table(title=f"epoch {epoch}")
        shown = [(title, key) for title, key in TABLE_COLUMNS if key in metrics]
        for title, _ in shown:
            table.add_column(title, justify="right")
        table.add_row(*(f"{metrics[key]:.4g}" for _, key in shown))
        console.print(table)

    def restore_epochs(self, rows: list[dict[str, Any]], step: int, step_values: dict[str, float]) -> None:
        """After a kill: log the metrics.jsonl rows that no W&B segment of the run holds (`rows_wandb_lacks`), each
        at its own step, oldest first, before this segment logs anything; the checkpoint's step (`step`) also gets
        its own values (loss, lr), which the kill lost with the row."""

        def send() -> None:
            for row in rows:
                values = {k: v for k, v in row.items() if k != "step"}
                self.run.log({**(step_values if row["step"] == step else {}), **values}, step=row["step"], commit=True)

        self._to_wandb(send)
        if rows and self.accelerator.is_main_process and self.use_wandb:
            console.print(f"W&B: restored the rows of epochs {[r['epoch'] for r in rows]}, lost by a kill")

    def log_samples(self, rows: list[np.ndarray], epoch: int, step: int) -> None:
        """Sample grids, before the epoch's metrics commit step `step`."""
        if not self.accelerator.is_main_process or not rows:
            return
        grid = stack(rows)
        write_atomically(self.run_dir.samples / f"epoch_{epoch:04d}.png", PIL.Image.fromarray(grid).save)
        if self.use_wandb:
            import wandb

            caption = "LR (nearest) | bicubic | SR | HR (PSNR-Y), above the same zoomed crop of each"
            image = wandb.Image(grid, caption=caption)
            self._to_wandb(lambda: self.run.log({"samples": image}, step=step, commit=False))

    def summary(self, **values: Any) -> None:
        self._to_wandb(lambda: self.run.summary.update(values))

    def finish(self) -> None:
        if not self.accelerator.is_main_process:
            return

        def finish_all() -> None:
            for tracker in self.accelerator.trackers:
                tracker.finish()

        self._to_wandb(finish_all)
        if self.use_wandb and self.mode == "offline":
            console.print(
                f"W&B ran offline; upload later with: wandb sync {self.run_dir.wandb}/offline-run-*",
                soft_wrap=True,
            )


def only_wandb_run(run: RunDir) -> str:
    """The id of the one W&B run in the run directory ('' for none or several). A run started over keeps it: the
    attempt that died logged the same first steps (same seed), so W&B shows one run, not an orphan beside it."""
    ids = {p.name.rsplit("-", 1)[1] for p in run.wandb.glob("*run-*") if p.is_dir()}
    return ids.pop() if len(ids) == 1 else ""


def rows_wandb_lacks(run: RunDir, run_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics rows (with their `step`) that no W&B segment of run `run_id` holds: a resume logs them."""
    logged = wandb_epochs(run, run_id) if rows else set()
    return [r for r in rows if r["epoch"] not in logged and "step" in r]


def _held_open(files: list[Path]) -> bool:
    """Whether some process has one of `files` open (Linux's /proc; elsewhere nothing is found)."""
    targets = {str(f.resolve()) for f in files}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with suppress(OSError):
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


def wandb_epochs(run: RunDir, run_id: str) -> set[int]:
    """The epochs whose row some W&B segment of run `run_id` holds (call before this segment's W&B run starts).
    A killed trainer's W&B service may still hold its file open, and write rows it buffered, until it notices
    the death (about a second): wait until no process has a segment's file open, so that what is read is final.
    Each finished segment is read once (about 1 s); what it holds is kept in `wandb/srtrain-epochs.json`."""
    wandb_dir = run.wandb
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

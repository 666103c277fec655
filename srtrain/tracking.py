"""Where results go: W&B (through accelerate's tracker), `metrics.jsonl`, sample grids and the console.

Only the main process writes. W&B runs offline by itself when no API key is configured, and its files
land under `OUTPUT_DIR/wandb/`, next to the local copies, so a run directory is complete on its own.
"""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from accelerate import Accelerator
from rich.console import Console
from rich.table import Table

from srtrain.config import Config
from srtrain.visual import stack

console = Console(soft_wrap=True)  # long lines stay whole in logs; tables still fit the width
TABLE_COLUMNS = [
    ("train", "train_loss"),
    ("val", "val_loss"),
    ("PSNR-Y", "psnr_y"),
    ("SSIM-Y", "ssim_y"),
    ("PSNR-RGB", "psnr_rgb"),
    ("lr", "lr"),
    ("sec", "epoch_time_s"),
    ("patch/s", "patches_per_s"),
]


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


class Tracker:
    """The run's writer: call on every process; everything but the return values is main-process only."""

    def __init__(self, accelerator: Accelerator, cfg: Config, out_dir: Path, run_id: str) -> None:
        self.accelerator, self.out_dir = accelerator, out_dir
        self.mode = wandb_mode(cfg)
        self.use_wandb = self.mode != "disabled"
        if not accelerator.is_main_process:
            return
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        self.metrics_file = out_dir / "metrics.jsonl"
        if self.use_wandb:
            os.environ["WANDB_MODE"] = self.mode
            init = {"dir": str(out_dir), "id": run_id, "resume": "allow"}
            if cfg.wandb.name:
                init["name"] = cfg.wandb.name
            if cfg.wandb.entity:
                init["entity"] = cfg.wandb.entity
            accelerator.init_trackers(cfg.wandb.project, config=cfg.to_dict(), init_kwargs={"wandb": init})
            self.run = accelerator.get_tracker("wandb", unwrap=True)
            console.print(f"W&B run {run_id} ({self.mode}), files in {out_dir / 'wandb'}")

    def log_epoch(self, metrics: dict[str, Any], epoch: int) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
        if self.use_wandb:
            self.accelerator.log(metrics, step=epoch)
        table = Table(title=f"epoch {epoch}")
        shown = [(title, key) for title, key in TABLE_COLUMNS if key in metrics]
        for title, _ in shown:
            table.add_column(title, justify="right")
        table.add_row(*(f"{metrics[key]:.4g}" for _, key in shown))
        console.print(table)

    def log_samples(self, rows: list[np.ndarray], epoch: int) -> None:
        if not self.accelerator.is_main_process or not rows:
            return
        grid = stack(rows)
        PIL.Image.fromarray(grid).save(self.out_dir / "samples" / f"epoch_{epoch:04d}.png")
        if self.use_wandb:
            import wandb

            caption = "LR (nearest) | bicubic | SR | HR (PSNR-Y), above the same zoomed crop of each"
            self.run.log({"samples": wandb.Image(grid, caption=caption)}, step=epoch)

    def summary(self, **values: Any) -> None:
        if self.accelerator.is_main_process and self.use_wandb:
            self.run.summary.update(values)

    def finish(self) -> None:
        if not self.accelerator.is_main_process:
            return
        if self.use_wandb:
            self.accelerator.end_training()
            if self.mode == "offline":
                console.print(
                    f"W&B ran offline; upload later with: wandb sync {self.out_dir / 'wandb'}/offline-run-*",
                    soft_wrap=True,
                )

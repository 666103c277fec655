"""`srtrain report`: compare finished runs in one self-contained `report.md` with the PNGs it links.

Everything comes from the run directories (`config.yaml`, `metrics.jsonl`, the best checkpoint), so a report
can be rebuilt at any time without W&B. Runs of different scales or validation sets are grouped, never ranked
together: a PSNR at x2 says nothing about one at x4.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from srtrain.config import DataConfig, saved_config
from srtrain.data import ValImages, load_images
from srtrain.evaluation import super_resolve
from srtrain.files import write_atomically, write_text_atomically
from srtrain.models.bicubic import Bicubic
from srtrain.models.profile import trainable_parameters
from srtrain.rundir import RunDir, model_from_checkpoint, read_metrics
from srtrain.visual import crop_comparison, crop_size, detailed_crop, stack

REPORT = "report.md"
IMAGES = "images"


class ReportError(ValueError):
    """A run directory cannot be reported, or the report would overwrite files it did not write."""


@dataclass
class Run:
    path: Path
    name: str
    model: str
    scale: int
    val: str
    data: DataConfig
    epochs: list[dict[str, Any]]  # the validation rows of metrics.jsonl
    parameters: int

    @property
    def best(self) -> dict[str, Any]:
        return max(self.epochs, key=lambda r: r["psnr_y"])

    @property
    def final(self) -> dict[str, Any]:
        return self.epochs[-1]


def read_run(path: Path) -> Run:
    """A run directory's config, validation history and parameter count; a clear error names what is missing."""
    run_dir = RunDir(path)
    for file in (run_dir.config, run_dir.metrics):
        if not file.is_file():
            raise ReportError(f"'{path}' is not a finished run directory: {file.name} is missing")
    cfg = saved_config(run_dir.config)
    rows, _damaged = read_metrics(run_dir.metrics)  # a line cut off by a full disk: the whole rows still report
    epochs = [r for r in rows if "psnr_y" in r]
    if not epochs:
        raise ReportError(f"'{run_dir.metrics}' holds no validation rows yet; report runs that validated at least once")
    model, _ = model_from_checkpoint(path)
    return Run(
        path=path,
        name=path.resolve().name,
        model=cfg.model.name,
        scale=cfg.scale,
        val=cfg.data.val,
        data=cfg.data,
        epochs=epochs,
        parameters=trainable_parameters(model),
    )


def groups(runs: list[Run]) -> dict[tuple[int, str], list[Run]]:
    """Runs by (scale, validation set), each group sorted by best PSNR-Y, highest first."""
    out: dict[tuple[int, str], list[Run]] = {}
    for run in runs:
        out.setdefault((run.scale, run.val), []).append(run)
    return {key: sorted(rs, key=lambda r: -r.best["psnr_y"]) for key, rs in sorted(out.items())}


def _rate(run: Run) -> str:
    """The median epoch's patches/s: a run's last epoch may be a part (a time budget ran out) and a first one slow."""
    rates = [r["patches_per_s"] for r in run.epochs if r.get("patches_per_s")]
    value = statistics.median(rates) if rates else float("nan")
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


LEADERBOARD = [
    ("run", lambda r: f"`{r.name}`"),
    ("model", lambda r: r.model),
    ("params", lambda r: f"{r.parameters:,}"),
    ("best PSNR-Y", lambda r: f"**{r.best['psnr_y']:.2f}** (epoch {r.best['epoch']})"),
    ("best SSIM-Y", lambda r: f"{r.best['ssim_y']:.4f}"),
    ("best PSNR-RGB", lambda r: f"{r.best['psnr_rgb']:.2f}"),
    ("final PSNR-Y", lambda r: f"{r.final['psnr_y']:.2f}"),
    ("final SSIM-Y", lambda r: f"{r.final['ssim_y']:.4f}"),
    ("final PSNR-RGB", lambda r: f"{r.final['psnr_rgb']:.2f}"),
    ("train min", lambda r: f"{r.final.get('train_minutes', float('nan')):.1f}"),
    ("patches/s (median epoch)", _rate),
    ("run directory", lambda r: f"`{r.path}`"),
]


def leaderboard_rows(runs: list[Run]) -> list[list[str]]:
    return [[cell(r) for _, cell in LEADERBOARD] for r in runs]


def curve(runs: list[Run], key: str, ylabel: str, title: str, file: Path) -> None:
    """One line per run over epochs (bicubic's PSNR-Y dashed for reference), saved as a PNG by the headless Agg
    canvas: no pyplot, no display, no global backend state (reports are built on clusters and in CI)."""
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for run in runs:
        rows = [r for r in run.epochs if key in r]
        ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker="o", label=f"{run.name} ({run.model})")
    bicubic = runs[0].epochs[0].get("bicubic_psnr_y")
    if key == "psnr_y" and bicubic is not None:
        ax.axhline(bicubic, color="gray", linestyle="--", label="bicubic")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomically(file, fig.savefig)


@torch.no_grad()
def crops(runs: list[Run], n_images: int, file: Path) -> None:
    """HR | bicubic | each run's best checkpoint on the same detailed crop of the first validation images."""
    scale = runs[0].scale
    val = ValImages(load_images(runs[0].data, "val"), scale)
    models = [(run, model_from_checkpoint(run.path)[0].eval()) for run in runs]
    rows = []
    for i in range(min(n_images, len(val))):
        lr, hr = val[i]["lr"][None], val[i]["hr"][None]
        box = detailed_crop(hr[0], crop_size(hr))
        methods = [("bicubic", Bicubic(scale)(lr).float())]
        methods += [(f"{run.name} ({run.model})", super_resolve(model, lr, scale)) for run, model in models]
        rows.append(crop_comparison(hr, methods, box))
    write_atomically(file, PIL.Image.fromarray(stack(rows)).save)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def every_file(out_dir: Path, files: dict[tuple[int, str], dict[str, Path]]) -> list[Path]:
    """report.md and every PNG of `plan`'s groups."""
    return [out_dir / REPORT, *(f for group in files.values() for f in group.values())]


def plan(runs: list[Run], out_dir: Path, force: bool) -> dict[tuple[int, str], dict[str, Path]]:
    """The PNGs of each group; refuses, without `force`, to overwrite any file the report would write."""
    files = {}
    for scale, val in groups(runs):
        slug = f"x{scale}_{_slug(Path(val).name or val)}"
        files[scale, val] = {kind: out_dir / IMAGES / f"{kind}_{slug}.png" for kind in ("psnr", "loss", "crops")}
    existing = [str(f) for f in every_file(out_dir, files) if f.exists()]
    if existing and not force:
        raise ReportError(f"{', '.join(existing)} already exist(s); pass --force to overwrite or choose another -o")
    return files


def build_report(runs: list[Run], out_dir: Path, n_images: int = 2, force: bool = False) -> Path:
    """Write `out_dir/report.md` and the PNGs it links under `out_dir/images/`; returns the report's path."""
    files = plan(runs, out_dir, force)
    new = [f for f in every_file(out_dir, files) if not f.exists()]
    try:
        return _write_report(runs, out_dir, n_images, files)
    except BaseException:  # a half-made report would block its own retry (`plan` refuses existing files)
        for f in new:
            f.unlink(missing_ok=True)
        raise


def _write_report(runs: list[Run], out_dir: Path, n_images: int, files: dict[tuple[int, str], dict[str, Path]]) -> Path:
    """`build_report`'s writing: per group the curves, the crops and a section of report.md."""
    (out_dir / IMAGES).mkdir(parents=True, exist_ok=True)
    lines = [
        "# srtrain report",
        "",
        f"{len(runs)} run(s). PSNR-Y / SSIM-Y on the Y channel with `scale` pixels shaved, as the SR literature "
        "scores; runs of different scales or validation sets are in separate sections, each sorted by best PSNR-Y.",
    ]
    for (scale, val), members in groups(runs).items():
        png = files[scale, val]
        curve(members, "psnr_y", "PSNR-Y (dB)", f"validation PSNR-Y, x{scale} on {val}", png["psnr"])
        curve(members, "train_loss", "training loss", f"training loss, x{scale}", png["loss"])
        crops(members, n_images, png["crops"])
        link = {kind: file.relative_to(out_dir).as_posix() for kind, file in png.items()}
        lines += ["", f"## x{scale} on `{val}`", ""]
        lines += ["| " + " | ".join(title for title, _ in LEADERBOARD) + " |", "|" + "---|" * len(LEADERBOARD)]
        lines += ["| " + " | ".join(cells) + " |" for cells in leaderboard_rows(members)]
        lines += [
            "",
            f"![validation PSNR-Y]({link['psnr']})",
            "",
            f"![training loss]({link['loss']})",
            "",
            "Zoomed crops of the same validation images (crop PSNR-Y in each label), from each run's best checkpoint:",
            "",
            f"![crop comparison]({link['crops']})",
        ]
    report = out_dir / REPORT
    write_text_atomically(report, "\n".join(lines) + "\n")
    return report


def log_leaderboard(runs: list[Run], project: str) -> str:
    """The leaderboard as a W&B Table in a `report` job of `project`; returns the W&B run's id."""
    import wandb

    columns = ["group", *(title for title, _ in LEADERBOARD)]
    data = [[f"x{scale} {val}", *cells] for (scale, val), rs in groups(runs).items() for cells in leaderboard_rows(rs)]
    with wandb.init(project=project, job_type="report") as run:
        run.log({"leaderboard": wandb.Table(columns=columns, data=data)})
        return run.id


def online_project(runs: list[Run]) -> str | None:
    """The W&B project of runs that ran online (a `wandb/run-*` folder, not `offline-run-*`), else None."""
    for run in runs:
        if any(RunDir(run.path).wandb.glob("run-*")):
            return saved_config(RunDir(run.path).config).wandb.project
    return None

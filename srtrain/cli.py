"""Command line: `srtrain [train] [--config FILE] [--key=value ...]`, `srtrain eval|upscale|models ...`."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table
from torch import nn

from srtrain.config import ConfigError, DataConfig, coerce, load_config, parse_overrides
from srtrain.data import DataError, missing_source
from srtrain.files import write_text_atomically

USAGE = """usage: srtrain [train] [--config jobs/NAME.yaml] [--key=value | --section.key=value ...]
       srtrain prepare SOURCE OUT [--tile 480 --stride 240 --scales 2,3,4 --num_proc N]
       srtrain eval (--checkpoint RUN_DIR_OR_FOLDER | --model NAME) --data SOURCE [--data ...] --scale N
       srtrain upscale IN... -o OUT (--checkpoint RUN | --model NAME [--weights FILE]) [--scale N]
       srtrain report RUN_DIR... -o DIR

  train   train a model (the default command); e.g. srtrain --model=espcn --lr=0.001 --scale=4
          runs under `accelerate launch srtrain/main.py ...` for several processes or GPUs
  eval    score a trained model or the bicubic baseline as the SR literature does (srtrain eval -h)
  prepare cut HR images into memory-mapped Arrow tiles for fast training (srtrain prepare -h)
  upscale super-resolve image files: srtrain upscale IN... -o OUT (--checkpoint RUN | --model NAME --weights F)
  report  compare runs: srtrain report RUN_DIR... -o DIR writes report.md with curves and crop comparisons
  models  list the model zoo: parameters, multiply-adds, latency on this machine (srtrain models -h)
  check-config  validate a job's configuration without training (what slurm/ scripts run first)
  check-data  scan a data source as training does, listing unusable images (srtrain check-data -h)
  sweep   list, check, run or submit (SLURM array) the points of a W&B grid sweep YAML (srtrain sweep -h)
"""


def _error(err: Exception | str, status: int = 2) -> int:
    Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    return status


def file_in_the_way(folder: Path) -> Path | None:
    """A file where `folder` or one of its parents should be a folder (checked before any work is done)."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def wants_help(argv: list[str]) -> bool:
    """`-h`/`--help` anywhere among a command's --key=value arguments, which `parse_overrides` would take for a key."""
    return any(a in ("-h", "--help") for a in argv)


def train_main(argv: list[str]) -> int:
    """Parse, validate, train. Configuration and data errors end with one clear line and status 2, a diverged run
    or a failed checkpoint write with one line and status 1, a stop on a signal with EXIT_RESUMABLE (75)."""
    if wants_help(argv):
        from srtrain.config_doc import key_table

        print(USAGE + "\nconfiguration keys (--key=value; docs/configuration.md):\n\n" + key_table())
        return 0
    from srtrain.checkpoint import CheckpointError
    from srtrain.models.weights import WeightsError
    from srtrain.stopping import EXIT_RESUMABLE, StoppedToResume
    from srtrain.train import AlreadyFinished, NonFiniteLossError, train

    try:
        config_file, overrides = parse_overrides(argv)
        train(load_config(config_file, overrides))
    except (ConfigError, DataError, WeightsError) as err:
        return _error(err)
    except (NonFiniteLossError, CheckpointError) as err:
        return _error(err, 1)
    except AlreadyFinished as done:
        Console().print(f"srtrain: {done}", highlight=False, soft_wrap=True)
        return 0
    except StoppedToResume as stop:
        with contextlib.suppress(OSError):  # saved: a closed stderr must not turn the stop into a failure
            Console(stderr=True).print(f"[bold yellow]srtrain:[/] {stop}", highlight=False, soft_wrap=True)
        return EXIT_RESUMABLE
    return 0


def close_process_group() -> bool:
    """Every rank, on every way out of a command, destroys its gloo/NCCL group; True when there was one."""
    dist = sys.modules.get("torch.distributed")  # never imported: no group to close
    if dist is None or not dist.is_initialized():
        return False
    dist.destroy_process_group()
    return True


def end_process(status: int) -> NoReturn:
    """A worker of a multi-process launch ends here, after its group is closed, without finalizing the interpreter.

    torch never joins gloo's worker threads (destroying the group leaves them running). One that is still releasing
    a finished collective's tensors when the interpreter finalizes needs the GIL that finalization denies it, and
    the process aborts with "terminate called without an active exception" (about 1 run in 60 of a 2-process
    training on CPU; pytorch/pytorch PR 179291). So the exit handlers (W&B, logging) run and the output is flushed
    while the interpreter is whole, then the process exits with `status` at once."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def check_config_main(argv: list[str]) -> int:
    """Validate a job as training does, without starting it: `accelerate launch` turns every error of its
    workers into its own status 1 and a traceback, so batch scripts run this first and stop with 2 and one line."""
    if wants_help(argv):
        print(
            "usage: srtrain check-config [--config jobs/NAME.yaml] [--key=value | --section.key=value ...]\n\n"
            "Validate a job's configuration as training would, without loading data or training: status 0 and\n"
            "one line when it is valid, status 2 and one line naming the problem when not (`srtrain --help` lists\n"
            "the keys)."
        )
        return 0
    try:
        config_file, overrides = parse_overrides(argv)
        cfg = load_config(config_file, overrides)
        for key, spec in (("data.train", cfg.data.train), ("data.val", cfg.data.val)):
            if problem := missing_source(spec):
                raise ConfigError(f"{key}: {problem}")
        from srtrain.train import checked_model

        checked_model(cfg)  # every option the model cannot use, as training would find it
    except ConfigError as err:
        return _error(err)
    Console().print(f"configuration valid: {cfg.model.name} x{cfg.scale}, {cfg.epochs} epochs", highlight=False)
    return 0


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint RUN, or --model NAME with --weights FILE and --option KEY=VALUE (eval and upscale share them)."""
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", type=Path, help="a run directory (its best checkpoint) or a checkpoint folder")
    who.add_argument("--model", help="a registered model, e.g. bicubic or imdn; with --weights for external weights")
    p.add_argument(
        "--weights", type=Path, help="safetensors or weights-only torch file for --model (official files too)"
    )
    p.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a model option, e.g. mobile=true for carn"
    )


def load_model(args: argparse.Namespace) -> tuple[nn.Module, int]:
    """The model and scale that `add_model_arguments` name; --scale must agree with a checkpoint's."""
    from srtrain.checkpoint import model_from_checkpoint
    from srtrain.models import build_model, model_options
    from srtrain.models.weights import load_model_weights

    if args.checkpoint:
        if args.weights or args.option:
            raise ConfigError("--weights and --option go with --model; a checkpoint brings its own")
        model, scale = model_from_checkpoint(args.checkpoint)
        if args.scale not in (None, scale):
            raise ConfigError(f"--scale {args.scale} but checkpoint {args.checkpoint} was trained for x{scale}")
        return model, scale
    if args.scale is None:
        raise ConfigError("--scale is required with --model")
    known, options = model_options(args.model), {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE with KEY one of {', '.join(known) or '(none)'}")
        options[key] = coerce(f"model.{key}", value, known[key])
    model = build_model(args.model, args.scale, **options)
    if args.weights:
        load_model_weights(model, args.weights)
    return model, args.scale


def eval_parser() -> argparse.ArgumentParser:
    from srtrain.evaluation import SCORES

    p = argparse.ArgumentParser(
        prog="srtrain eval",
        description="Score SR models with MATLAB bicubic LR, Y-channel PSNR/SSIM and border shave.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--data",
        action="append",
        required=True,
        help="HR image folder (LR made by MATLAB bicubic), HR_DIR,LR_DIR folder pair, .parquet/.arrow, "
        "save_to_disk folder or Hub id; repeat for several sets",
    )
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscale factor (default: the checkpoint's)")
    p.add_argument("--json", type=Path, help="write the results, per image too, to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite the --json file if it exists")
    p.add_argument("--gray", choices=("replicate", "direct"), default="replicate", help="how gray images are scored")
    p.add_argument("--metrics", default="psnr_y,ssim_y,psnr_rgb", help=f"comma list of {', '.join(SCORES)}")
    p.add_argument("--tile", type=int, default=0, help="LR tile size for tiled inference (0 = whole image)")
    p.add_argument("--tile-overlap", type=int, default=16, help="LR pixels of context around each tile")
    p.add_argument("--split", default="validation", help="split of a Hub id or dataset dict")
    p.add_argument("--hr-column", default="hr")
    p.add_argument("--lr-column", default="lr")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    return p


def eval_main(argv: list[str]) -> int:
    """`srtrain eval`: a rich table per run and, with --json, every figure per image."""
    args = eval_parser().parse_args(argv)
    import torch
    from accelerate import Accelerator

    from srtrain.evaluation import SCORES, evaluate_source

    scores = [s.strip() for s in args.metrics.split(",") if s.strip()]
    try:
        unknown = [s for s in scores if s not in SCORES]
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown}; choose from {', '.join(SCORES)}")
        if args.mixed_precision == "fp16" and not torch.cuda.is_available():  # accelerate would run fp32 silently
            raise ConfigError("--mixed-precision fp16 needs a GPU; on CPU use --mixed-precision bf16 or no")
        if args.json and args.json.exists() and not args.force:
            raise ConfigError(f"{args.json} already exists; pass --force to overwrite it or choose another --json")
        if args.json and (blocker := file_in_the_way(args.json.parent)):
            raise ConfigError(f"--json {args.json}: {blocker} is a file, not a folder; choose another --json")
        model, scale = load_model(args)
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=args.mixed_precision)
        # Evaluation needs the device and, with --mixed-precision, autocast; not `prepare_model`, whose check for
        # distributed tensors imports torch.distributed.tensor (about 1 s of every eval's start-up).
        model = model.to(accelerator.device)
        results = []
        for source in args.data:
            data = DataConfig(
                val=source, val_split=args.split, hr_column=args.hr_column, lr_column=args.lr_column, gray=args.gray
            )
            with accelerator.autocast():
                results.append(evaluate_source(model, data, scale, accelerator, scores, args.tile, args.tile_overlap))
    except (ConfigError, DataError, ValueError) as err:
        return _error(err)
    if not accelerator.is_main_process:
        return 0
    table = Table(title=f"srtrain eval: {args.checkpoint or args.model}, {accelerator.num_processes} process(es)")
    for column in ("set", "scale", *scores, "images", "seconds"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for r in results:
        figures = [f"{r[s]:.2f}" if s.startswith("psnr") else f"{r[s]:.4f}" for s in scores]
        table.add_row(r["dataset"], f"x{r['scale']}", *figures, str(r["n_images"]), f"{r['seconds']:.1f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # logs keep every column readable
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(args.json, json.dumps({"results": results}, indent=2))
        except OSError as err:
            return _error(f"could not write {args.json} ({err.strerror}); the table above has the results", 1)
    return 0


def models_main(argv: list[str]) -> int:
    """`srtrain models`: the zoo with parameters, multiply-adds and latency measured on this machine."""
    p = argparse.ArgumentParser(prog="srtrain models", description="List the registered SR models.")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=4)
    p.add_argument("--latency-size", type=int, default=128, help="LR side of the latency input")
    p.add_argument("--no-latency", action="store_true", help="skip the (slow for big models) latency runs")
    args = p.parse_args(argv)
    import torch

    from srtrain.models.profile import model_rows

    rows = model_rows(args.scale, not args.no_latency, args.latency_size)
    table = Table(
        title=f"srtrain models, x{args.scale}: multiply-adds for a 1280x720 output, latency for a "
        f"{args.latency_size}x{args.latency_size} LR input ({torch.get_num_threads()} CPU threads)"
    )
    for column in ("model", "scales", "parameters", "GMACs (720p)", "latency ms", "description"):
        table.add_column(column, justify="left" if column in ("model", "description") else "right")
    for r in rows:
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        table.add_row(
            r["name"],
            ",".join(map(str, r["scales"])),
            f"{r['parameters']:,}",
            f"{r['gmacs_720p']:.1f}",
            latency,
            r["description"],
        )
    Console().print(table)
    return 0


def sweep_main(argv: list[str]) -> int:
    """`srtrain sweep FILE`: a W&B grid without a W&B server, listed, checked, run point by point or as an array."""
    p = argparse.ArgumentParser(prog="srtrain sweep", description="Run the points of a W&B grid sweep YAML.")
    p.add_argument("file", type=Path, help="a sweep YAML, e.g. sweeps/grid.yaml")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="print every point with its index, in W&B's grid order")
    what.add_argument("--dry-run", action="store_true", help="resolve every point's config and build its model")
    what.add_argument("--run", type=int, metavar="I", help="train point I here, into runs/<sweep>/<I>")
    what.add_argument("--args", type=int, metavar="I", help="print point I's srtrain/main.py arguments, one a line")
    what.add_argument("--slurm", action="store_true", help="submit slurm/grid_array.sbatch as an array over all points")
    p.add_argument("--sbatch", default="", metavar="OPTIONS", help="extra sbatch options with --slurm, e.g. '-p gpu'")
    args = p.parse_args(argv)
    from srtrain import sweep

    try:
        spec = sweep.load_sweep(args.file)
        name = sweep.sweep_name(args.file, spec)
        points = sweep.grid_points(spec)
        index = args.run if args.run is not None else args.args
        if index is not None and not 0 <= index < len(points):
            raise ConfigError(
                f"{args.file} has {len(points)} points, 0 to {len(points) - 1}; there is no point {index}"
            )
        if args.list:
            for i, point in enumerate(points):
                print(i, " ".join(f"{k}={v}" for k, v in point.items()))
        elif args.dry_run:
            for i, point in enumerate(points):
                sweep.check_point(sweep.point_args(name, i, point))
            print(f"{args.file}: {len(points)} points, every config valid and every model builds")
        elif args.args is not None:
            print("\n".join(sweep.point_args(name, index, points[index])))
        elif args.run is not None:
            return sweep.run_point(sweep.point_args(name, index, points[index]))
        else:
            return sweep.submit_array(args.file, len(points), args.sbatch)
    except ConfigError as err:
        return _error(err)
    return 0


def upscale_main(argv: list[str]) -> int:
    """`srtrain upscale`: exit 0 when every file was upscaled, 1 when some were skipped, 2 on a usage error."""
    p = argparse.ArgumentParser(
        prog="srtrain upscale",
        description="Super-resolve image files (any size, tile by tile) with a trained run or a published model.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders (recursive) or glob patterns")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (files keep their names)")
    add_model_arguments(p)
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscale factor (default: the checkpoint's)")
    p.add_argument("--tile", type=int, default=256, help="LR tile size bounding memory (0 = whole image)")
    p.add_argument("--tile-overlap", type=int, default=32, help="LR pixels of context around each tile")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU: faster, slightly different output)")
    p.add_argument("--force", action="store_true", help="overwrite output files that already exist")
    args = p.parse_args(argv)
    import torch

    from srtrain.upscale import UpscaleError, find_inputs, plan, run

    try:
        jobs = plan(find_inputs(args.inputs), args.output, args.force)
        model, scale = load_model(args)
    except (ConfigError, UpscaleError, ValueError) as err:
        return _error(err)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    failures = run(model, jobs, scale, args.tile, args.tile_overlap, device, args.bf16)
    done = len(jobs) - len(failures)
    Console().print(f"{done} of {len(jobs)} image(s) upscaled x{scale} into {args.output} on {device}")
    if failures:
        Console(stderr=True).print(
            f"[bold red]{len(failures)} failed:[/] " + "; ".join(f"{path} ({why})" for path, why in failures),
            highlight=False,
            soft_wrap=True,
        )
    return 1 if failures else 0


def report_main(argv: list[str]) -> int:
    """`srtrain report`: a leaderboard, curves and crop comparisons of finished runs in one Markdown file."""
    p = argparse.ArgumentParser(prog="srtrain report", description="Compare runs: report.md plus the PNGs it links.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories (output_dir of training)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for report.md and images/")
    p.add_argument("--images", type=int, default=2, help="validation images in the crop comparison")
    p.add_argument("--force", action="store_true", help="overwrite a report written before")
    p.add_argument(
        "--wandb-project",
        help="also log the leaderboard as a W&B Table here (default: the runs' project when they ran online)",
    )
    args = p.parse_args(argv)
    from srtrain.report import ReportError, build_report, log_leaderboard, online_project, read_run

    try:
        if blocker := file_in_the_way(args.output):
            raise ConfigError(f"-o {args.output}: {blocker} is a file, not a folder; choose another -o")
        runs = [read_run(path) for path in args.runs]
        report = build_report(runs, args.output, args.images, args.force)
    except (ReportError, DataError, ValueError, ConfigError) as err:
        return _error(err)
    Console().print(f"report: {report}")
    project = args.wandb_project or online_project(runs)
    if not project:
        return 0
    try:
        run_id = log_leaderboard(runs, project)
    except Exception as err:  # W&B unreachable or refusing: the report on disk is complete all the same
        return _error(
            f"the leaderboard was not logged to W&B project {project} ({err}); the report is complete. Rerun with "
            "--force when W&B is reachable, or with WANDB_MODE=offline to keep the table in a local W&B run",
            1,
        )
    Console().print(f"leaderboard logged to W&B project {project}, run {run_id}")
    return 0


def prepare_main(argv: list[str]) -> int:
    """`srtrain prepare SOURCE OUT`: a rich progress bar over `srtrain.data.prepared.prepare`, then its counts."""
    p = argparse.ArgumentParser(
        prog="srtrain prepare",
        description="Cut HR images into decoded uint8 tiles in sharded, memory-mapped Arrow files (docs/data.md). "
        "Rerun the same command to resume an interrupted run or to verify a finished one.",
    )
    p.add_argument("source", help="any data source: image folder, .parquet/.arrow, save_to_disk folder, Hub id")
    p.add_argument("out", type=Path, help="new or empty output folder (or one this command started)")
    p.add_argument("--tile", type=int, default=480, help="HR tile side in pixels")
    p.add_argument("--stride", type=int, default=240, help="pixels between tile origins")
    p.add_argument("--scales", default="", help="comma list of scales to store MATLAB-exact LR tiles for, e.g. 2,3,4")
    p.add_argument("--num_proc", type=int, default=1, help="processes writing shards")
    p.add_argument("--split", default="train", help="split of a Hub id or dataset dict")
    p.add_argument("--hr-column", default="hr")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload it as a Hub dataset (needs a Hub token)")
    args = p.parse_args(argv)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srtrain.data.prepare import prepare
    from srtrain.data.prepared import load_prepared

    try:
        scales = tuple(int(s) for s in args.scales.split(",") if s.strip())
        with Progress(
            TextColumn(f"preparing {args.out}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        ) as bar:
            task = bar.add_task("images", total=None)
            manifest = prepare(
                args.source,
                args.out,
                args.tile,
                args.stride,
                scales,
                args.num_proc,
                args.split,
                args.hr_column,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
        if args.push_to_hub:
            load_prepared(args.out).push_to_hub(args.push_to_hub)
    except (DataError, ValueError) as err:
        return _error(err)
    shards = manifest["shards"].values()
    Console().print(
        f"[bold]{args.out}[/]: {sum(e['tiles'] for e in shards):,} tiles from {sum(e['images'] for e in shards)} "
        f"images in {len(shards)} shards, counts and SHA-256 checksums verified"
        + (f"; pushed to the Hub as {args.push_to_hub}" if args.push_to_hub else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; its status. A process that held a process group (a worker of a multi-process launch)
    does not return: it ends here with the status (`end_process`)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = run_command(argv)
    finally:
        distributed = close_process_group()
    if distributed:
        end_process(status)
    return status


def check_data_command(argv: list[str]) -> int:
    """`srtrain check-data`: its own module, imported only when asked for; a bad source ends with one line."""
    from srtrain.datacheck import check_data_main

    try:
        return check_data_main(argv)
    except DataError as err:
        return _error(err)


COMMANDS = {
    "train": train_main,
    "eval": eval_main,
    "prepare": prepare_main,
    "upscale": upscale_main,
    "report": report_main,
    "models": models_main,
    "check-config": check_config_main,
    "check-data": check_data_command,
    "sweep": sweep_main,
}


def run_command(argv: list[str]) -> int:
    """Dispatch on the first argument; without a command (only --key=value overrides, or nothing) it is training."""
    if not argv or argv[0].startswith("-"):
        return train_main(argv)
    command = COMMANDS.get(argv[0])
    if command is None:
        guess = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return _error(ConfigError(f"unknown command '{argv[0]}': {hint}commands: {', '.join(COMMANDS)} (srtrain -h)"))
    return command(argv[1:])

"""What several commands share: the error line and its status, the flag spelling, the help check, and the model
that `eval` and `upscale` take from a run directory or from the zoo with weights (and their --ensemble's help)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from torch import nn

from srtrain.config import ConfigError, coerce

ENSEMBLE_HELP = "x8 self-ensemble (EDSR+): the mean over the 8 flips and quarter turns of each image; 8 times slower"


def error(err: Exception | str, status: int = 2) -> int:
    """One red line on stderr naming the problem and its fix; the status the command ends with."""
    Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    return status


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a command's flags, spelled with underscores as the configuration keys and `accelerate launch` spell
    theirs (`--hr_column`); the hyphenated spelling of earlier releases (`--hr-column`) is the same flag."""
    known = parser._option_string_actions  # (argparse keeps no public list of its flags)

    def spelled(arg: str) -> str:
        name, eq, value = arg.partition("=")
        canonical = "--" + name[2:].replace("-", "_")
        return canonical + eq + value if name.startswith("--") and name not in known and canonical in known else arg

    return parser.parse_args([spelled(arg) for arg in argv])


def wants_help(argv: list[str]) -> bool:
    """`-h`/`--help` anywhere among a command's --key=value arguments, which `parse_overrides` would take for a key."""
    return any(a in ("-h", "--help") for a in argv)


def file_in_the_way(folder: Path) -> Path | None:
    """A file where `folder` or one of its parents should be a folder (checked before any work is done)."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


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
    p.add_argument(
        "--raw_weights", action="store_true", help="a checkpoint's trained weights, not its weight average (`ema`)"
    )


def load_model(args: argparse.Namespace) -> tuple[nn.Module, int]:
    """The model and scale that `add_model_arguments` name; --scale must agree with a checkpoint's."""
    from srtrain.models import build_model, model_options
    from srtrain.models.weights import load_model_weights
    from srtrain.rundir import model_from_checkpoint

    if args.checkpoint:
        if args.weights or args.option:
            raise ConfigError("--weights and --option go with --model; a checkpoint brings its own")
        model, scale = model_from_checkpoint(args.checkpoint, args.raw_weights)
        if args.scale not in (None, scale):
            raise ConfigError(f"--scale {args.scale} but checkpoint {args.checkpoint} was trained for x{scale}")
        return model, scale
    if args.scale is None:
        raise ConfigError("--scale is required with --model")
    if args.raw_weights:
        raise ConfigError("--raw_weights goes with --checkpoint (a run's own weights); --weights names one file")
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

"""srtrain/commands/common.py: the flag spelling every command shares."""

import argparse

import pytest

from srtrain.commands.common import parse
from srtrain.commands.upscale import parser as upscale_parser


def flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--tile_overlap", type=int, default=0)
    p.add_argument("--hr_column", default="hr")
    p.add_argument("value", nargs="?")
    return p


@pytest.mark.parametrize(
    "argv",
    [
        ["--tile_overlap", "8", "--hr_column=image"],
        ["--tile-overlap", "8", "--hr-column=image"],  # the spelling of earlier releases
    ],
)
def test_underscore_flags_and_their_hyphenated_spelling_are_the_same_flag(argv):
    args = parse(flags(), argv)
    assert (args.tile_overlap, args.hr_column) == (8, "image")


def test_a_flag_that_exists_in_neither_spelling_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(flags(), ["--tile-overlaps", "8"])
    assert exit_info.value.code == 2 and "--tile-overlaps" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "precision"),
    [
        ([], "no"),
        (["--mixed_precision", "bf16"], "bf16"),
        (["--mixed-precision", "bf16"], "bf16"),
        (["--bf16"], "bf16"),
    ],
)
def test_upscale_takes_the_precision_every_command_takes_and_its_old_bf16_flag(argv, precision):
    args = parse(upscale_parser(), ["in.png", "-o", "out", "--model", "bicubic", *argv])
    assert args.mixed_precision == precision

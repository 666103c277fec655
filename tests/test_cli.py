"""The `srtrain` entry points (srtrain/cli.py, srtrain/__main__.py): how a command starts and is chosen, whichever
way it is launched."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

from helpers import python

AFTER_A_COMMAND = """
import gc, weakref
from srtrain.__main__ import run
assert run(["check-config"]) == 0
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
alive = weakref.ref(a)
del a, b
gc.collect()
print("RESULT", gc.isenabled(), gc.get_freeze_count(), alive() is None)
"""


def test_a_command_freezes_what_its_imports_made_and_still_collects_garbage() -> None:
    proc = python(["-c", AFTER_A_COMMAND], check=False)
    assert proc.returncode == 0, proc.stderr
    enabled, frozen, collected = proc.stdout.rsplit("RESULT", 1)[1].split()
    assert enabled == "True" and collected == "True"
    assert int(frozen) > 100_000  # torch's and datasets' objects, out of every collection


def test_the_console_script_starts_through_the_frozen_imports() -> None:
    (entry,) = entry_points(group="console_scripts", name="srtrain")
    assert entry.value == "srtrain.__main__:run"


def test_a_mistyped_command_is_named_with_the_nearest_one(capsys) -> None:
    from srtrain.cli import main

    assert main(["evl", "--model", "espcn"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: unknown command 'evl': did you mean 'eval'? commands: train, eval,")


def test_output_into_a_closed_pipe_ends_quietly():
    """`srtrain --help | head` with the reader gone: status 1 and nothing on stderr, not a BrokenPipeError."""
    read, write = os.pipe()
    os.close(read)
    try:
        cmd = [sys.executable, "-m", "srtrain", "train", "--help"]
        proc = subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 1 and proc.stderr == ""

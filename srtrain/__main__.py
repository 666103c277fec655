"""The `srtrain` command, `python -m srtrain ...` and `accelerate launch -m srtrain ...`."""

import gc
import os
import sys
from collections.abc import Callable


def load_cli() -> Callable[[list[str] | None], int]:
    """Import the command line with the cyclic garbage collector paused, then freeze what the imports made.

    torch, datasets and accelerate leave some 450,000 long-lived objects behind on import; every full collection
    walks all of them, many times during the imports and again at the interpreter's exit. Frozen, they are out of
    every collection (about 1 s less per command on a 2-core machine, docs/performance.md), and loader workers forked
    later leave their pages shared."""
    gc.disable()
    try:
        from srtrain.cli import main
    finally:  # a failed import must not leave the collector off in a process that goes on
        gc.freeze()
        gc.enable()
    return main


def run(argv: list[str] | None = None) -> int:
    """Run one srtrain command (`argv`, else the process's arguments). Output piped into a reader that stopped
    early (`srtrain --help | head`) ends the command quietly, with 1, as other command-line tools do."""
    try:
        status = load_cli()(argv)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush must not fail again
        return 1
    from srtrain.faults import inject
    from srtrain.stopping import ignore_warning_signals

    ignore_warning_signals()  # the work is done: a late SLURM warning must not kill the exiting process
    inject("exit", 1, True)
    return status


if __name__ == "__main__":
    sys.exit(run())

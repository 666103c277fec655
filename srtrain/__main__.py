"""The `srtrain` command, `python -m srtrain ...` and `accelerate launch -m srtrain ...`."""

import gc
import sys


def run(argv: list[str] | None = None) -> int:
    """Import the command line with the cyclic garbage collector paused, freeze what the imports made, then run.

    torch, datasets and accelerate leave some 450,000 long-lived objects behind on import; every full collection
    walks all of them, many times during the imports and again at the interpreter's exit. Frozen, they are out of
    every collection (about 1 s less per command on a 2-core machine, docs/performance.md), and loader workers forked
    later leave their pages shared."""
    gc.disable()
    from srtrain.cli import main

    gc.freeze()
    gc.enable()
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())

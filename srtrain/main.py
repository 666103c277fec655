"""Entry point for `accelerate launch srtrain/main.py [--config FILE] [--key=value ...]`."""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: put the repository root, not this folder, first on the path, so that the package
    # imports as `srtrain` even without `pip install -e .`.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from srtrain.__main__ import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(["train", *sys.argv[1:]]))

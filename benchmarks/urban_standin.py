"""Write a stand-in for Urban100 (not available here): 100 PNGs with a long side of 1024 px, Urban100's count and
typical size, so that `srtrain eval` timings on it are reproducible.

    python benchmarks/urban_standin.py [--out /tmp/urban_standin] [--data ../shared/data]

The images are Set5, Set14 and the first 81 of T91 enlarged by the MATLAB-exact bicubic (`imresize` on uint8),
each keeping its aspect ratio, so sizes vary as Urban100's do (1024 x 600..1024).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from srtrain.degradation import imresize

LONG_SIDE, COUNT = 1024, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/urban_standin"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    args = parser.parse_args()
    sources = [p for d in ("Set5", "Set14", "T91") for p in sorted((args.data / d).glob("*.png"))][:COUNT]
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sources:
        rgb = np.asarray(PIL.Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        size = (round(h * LONG_SIDE / max(h, w)), round(w * LONG_SIDE / max(h, w)))
        big = imresize(torch.from_numpy(rgb.copy()).permute(2, 0, 1), size=size)
        PIL.Image.fromarray(big.permute(1, 2, 0).numpy()).save(args.out / f"{path.parent.name}_{path.stem}.png")
    print(f"{len(sources)} images in {args.out}")


if __name__ == "__main__":
    main()

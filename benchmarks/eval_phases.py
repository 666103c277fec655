"""Where the time of one real `srtrain eval` goes: the command as a user runs it, with its phases timed in place.

    cd /tmp && PYTHONPATH=<checkout> python <checkout>/benchmarks/eval_phases.py eval --model espcn --scale 4 \\
        --data /tmp/urban_standin

The arguments are `srtrain`'s. The imports go through `srtrain.__main__.load_cli`, as every srtrain command's
do; the functions below are wrapped to add up their wall and process CPU seconds, and the last line is the time
from this script's first line to the command's return (the interpreter's start and exit come on top). Unlike
`eval_speed.py`, which times each stage on its own, the stages here share one pass, so they add up to the loop.
"""

from __future__ import annotations

import collections
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

start = time.perf_counter()
seconds: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])


def timed(owner: Any, name: str, label: str) -> None:
    """Replace `owner.name` by a wrapper adding its wall and CPU seconds to `seconds[label]`."""
    inner: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds[label][0] += time.perf_counter() - wall
            seconds[label][1] += time.process_time() - cpu

    setattr(owner, name, wrapper)


def main() -> int:
    from srtrain.__main__ import load_cli

    command = load_cli()
    imported = time.perf_counter()
    from srtrain import evaluation, metrics
    from srtrain.data import images, patches

    timed(images.ImageSet, "problems", "check and decode")
    timed(evaluation, "evaluate", "loop over the images")
    timed(patches, "imresize", "  LR (imresize)")
    timed(evaluation, "super_resolve", "  model (super_resolve)")
    timed(metrics, "quantize", "  quantize")
    timed(metrics, "rgb_to_y", "  Y")
    timed(metrics, "_psnr", "  PSNRs")
    timed(metrics, "_ssim", "  SSIM")
    code = command(sys.argv[1:])
    print(f"{'import':26s} {imported - start:6.2f} s wall")
    for label, (wall, cpu) in seconds.items():
        print(f"{label:26s} {wall:6.2f} s wall {cpu:6.2f} s CPU")
    print(f"{'start to return':26s} {time.perf_counter() - start:6.2f} s wall")
    return code


if __name__ == "__main__":
    sys.exit(main())

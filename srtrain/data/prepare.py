"""`srtrain prepare`: a source's HR images cut once into the decoded uint8 tiles of a prepared dataset (its
format, and the reader training uses: `srtrain.data.prepared`).

A shard is written to a temporary name and renamed when complete, and the manifest, replaced atomically, records
it next; so an interrupted run resumes after its finished shards when rerun with the same settings, and a
finished run ends with every shard verified.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import torch

from srtrain.data.images import DataError, decode_image, example_name
from srtrain.data.prepared import (
    IMAGES_PER_SHARD,
    MANIFEST,
    SHAPE_COLUMNS,
    prepared_features,
    read_manifest,
    verify_prepared,
)
from srtrain.data.sources import load_source
from srtrain.degradation import imresize, modcrop
from srtrain.files import write_text_atomically
from srtrain.manifest import file_entry


@dataclass(frozen=True)
class PrepareSettings:
    """What a prepared folder was made from; a resumed run must match it exactly."""

    source: str
    split: str
    hr_column: str
    tile: int
    stride: int
    scales: tuple[int, ...]
    images: int


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets every `stride` pixels, plus one flush with the far edge so that the whole image is covered."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    return starts if starts[-1] + tile == length else [*starts, length - tile]


def cut_tiles(hr: torch.Tensor, name: str, tile: int, stride: int, scales: tuple[int, ...]) -> dict[str, list]:
    """One image's tiles as columns; HR is first cropped to a multiple of every scale so that LR tiles align."""
    hr = modcrop(hr, math.lcm(*scales) if scales else 1)
    lrs = {s: imresize(hr, 1 / s) for s in scales}
    c, h, w = hr.shape
    th, tw = min(tile, h), min(tile, w)
    rows: dict[str, list] = {key: [] for key in prepared_features(scales)}
    for y in tile_starts(h, tile, stride):
        for x in tile_starts(w, tile, stride):
            rows["name"].append(f"{name}@{y},{x}")
            for key, value in zip(SHAPE_COLUMNS, (c, th, tw), strict=True):
                rows[key].append(value)
            rows["hr"].append(hr[:, y : y + th, x : x + tw].contiguous().numpy().tobytes())
            for s, lr in lrs.items():
                rows[f"lr_x{s}"].append(
                    lr[:, y // s : (y + th) // s, x // s : (x + tw) // s].contiguous().numpy().tobytes()
                )
    return rows


def _open_hr(settings: PrepareSettings) -> datasets.Dataset:
    ds = load_source(settings.source, settings.split)
    if not isinstance(ds, datasets.Dataset) or settings.hr_column not in ds.column_names:
        raise DataError(
            f"'{settings.source}' has no HR column '{settings.hr_column}' (columns: {ds.column_names}); "
            "pass --hr_column NAME"
        )
    return ds.cast_column(settings.hr_column, datasets.Image(decode=False))


def _write_shard(settings: PrepareSettings, shard: int, path: Path) -> dict[str, Any]:
    """Write one shard under a temporary name, then rename it: a shard file that exists is complete."""
    ds, column = _open_hr(settings), settings.hr_column
    schema = prepared_features(settings.scales).arrow_schema
    first = shard * IMAGES_PER_SHARD
    indices = range(first, min(first + IMAGES_PER_SHARD, settings.images))
    tmp, tiles = path.with_name(path.name + ".tmp"), 0
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for i in indices:
            row = ds[i]
            name = example_name(row, column, f"{settings.source}[{i}]")
            hr = decode_image(row[column], column, name, settings.source, keep_gray=False)
            table = pa.table(cut_tiles(hr, name, settings.tile, settings.stride, settings.scales), schema=schema)
            writer.write_table(table)
            tiles += len(table)
    os.replace(tmp, path)
    return {"file": path.name, "images": len(indices), "tiles": tiles, **file_entry(path)}


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_text_atomically(out / MANIFEST, json.dumps(manifest, indent=1))


def _start(out: Path, settings: PrepareSettings) -> dict[str, Any]:
    """The manifest to continue: a new one in a new or empty folder, or the one of an interrupted run."""
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        if manifest["settings"] != json.loads(json.dumps(asdict(settings))):
            raise DataError(
                f"'{out}' was prepared with other settings ({manifest['settings']}); "
                "rerun with those to resume, or pick a new output folder"
            )
        return manifest
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"'{out}' exists and was not made by srtrain prepare; pick a new or empty output folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"settings": asdict(settings), "shards": {}}
    _write_manifest(out, manifest)
    return manifest


def prepare(
    source: str,
    out: Path,
    tile: int = 480,
    stride: int = 240,
    scales: tuple[int, ...] = (),
    num_proc: int = 1,
    split: str = "train",
    hr_column: str = "hr",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Cut `source` into `out` (or finish an interrupted run there) and return the verified manifest.

    `progress(images done, images in all)` is called at the start and as each shard finishes (for a progress bar).
    """
    bad = [s for s in scales if tile % s or stride % s]
    if bad or tile <= 0 or stride <= 0:
        raise DataError(f"--tile {tile} and --stride {stride} must be positive multiples of every scale in {scales}")
    settings = PrepareSettings(source, split, hr_column, tile, stride, tuple(scales), 0)
    settings = PrepareSettings(**{**asdict(settings), "images": len(_open_hr(settings))})
    manifest = _start(out, settings)
    todo = [
        k
        for k in range(math.ceil(settings.images / IMAGES_PER_SHARD))
        if f"{k:05d}" not in manifest["shards"] or not (out / manifest["shards"][f"{k:05d}"]["file"]).exists()
    ]

    def report() -> None:
        if progress:
            progress(sum(e["images"] for e in manifest["shards"].values()), settings.images)

    def done(shard: int, entry: dict[str, Any]) -> None:
        manifest["shards"][f"{shard:05d}"] = entry
        _write_manifest(out, manifest)
        report()

    report()

    if num_proc <= 1:
        for k in todo:
            done(k, _write_shard(settings, k, out / f"shard-{k:05d}.arrow"))
    else:
        threads = max(1, (os.cpu_count() or 1) // num_proc)  # the processes share the cores
        context = get_context("spawn")
        with ProcessPoolExecutor(num_proc, context, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
            jobs = {pool.submit(_write_shard, settings, k, out / f"shard-{k:05d}.arrow"): k for k in todo}
            for job in as_completed(jobs):
                done(jobs[job], job.result())
    return verify_prepared(out)

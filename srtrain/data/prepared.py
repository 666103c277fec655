"""`srtrain prepare`: HR images cut once into decoded uint8 sub-images in sharded Arrow files, memory-mapped.

Why: with 2K images a loader either decodes a PNG for every patch (`data.cache=false`) or holds a decoded copy
of every image in every process (`data.cache=true`, 8 copies on an 8-GPU node). Arrow files are read through
the page cache instead, so the processes on a node share one copy and nothing is decoded while training.

OUT holds `shard-NNNNN.arrow` (Arrow IPC streams, `IMAGES_PER_SHARD` source images each) and `MANIFEST` (the
settings and, per finished shard, its image and tile counts, size and SHA-256). A shard is written to a temporary
name and renamed when complete, so an interrupted run resumes after its finished shards when rerun with the
same settings. Columns: `name` (`image.png@y,x`), `channels`, `height`, `width`, `hr` (CHW uint8 bytes) and,
per scale `s`, `lr_xs`: the MATLAB-exact bicubic LR of the whole image, cut at the tile's place.
"""

from __future__ import annotations

import functools
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
import numpy as np
import pyarrow as pa
import torch

from srtrain.data.images import DataError, decode_image, example_name, good_rows
from srtrain.degradation import imresize, modcrop
from srtrain.files import write_text_atomically
from srtrain.manifest import file_entry, file_problem

MANIFEST = "srtrain_prepared.json"
IMAGES_PER_SHARD = 8  # about 250 MB of tiles per shard for 2K images at the default tile and stride
SHAPE_COLUMNS = ("channels", "height", "width")


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


def prepared_features(scales: tuple[int, ...]) -> datasets.Features:
    columns = {"name": datasets.Value("string"), **{c: datasets.Value("int32") for c in SHAPE_COLUMNS}}
    columns["hr"] = datasets.Value("binary")
    columns |= {f"lr_x{s}": datasets.Value("binary") for s in scales}
    return datasets.Features(columns)


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
    from srtrain.data.sources import load_source  # sources opens prepared folders, so it imports this module

    ds = load_source(settings.source, settings.split)
    if not isinstance(ds, datasets.Dataset) or settings.hr_column not in ds.column_names:
        raise DataError(
            f"'{settings.source}' has no HR column '{settings.hr_column}' (columns: {ds.column_names}); "
            "pass --hr-column NAME"
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


def _read_manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / MANIFEST).read_text())


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_text_atomically(out / MANIFEST, json.dumps(manifest, indent=1))


def _start(out: Path, settings: PrepareSettings) -> dict[str, Any]:
    """The manifest to continue: a new one in a new or empty folder, or the one of an interrupted run."""
    if (out / MANIFEST).exists():
        manifest = _read_manifest(out)
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


def _finished_manifest(out: Path) -> dict[str, Any]:
    manifest = _read_manifest(out)
    total = math.ceil(manifest["settings"]["images"] / IMAGES_PER_SHARD)
    if len(manifest["shards"]) != total:
        raise DataError(
            f"'{out}' is an unfinished srtrain prepare ({len(manifest['shards'])} of {total} shards): "
            f"rerun `srtrain prepare {manifest['settings']['source']} {out}` with the same settings to finish it"
        )
    return manifest


def verify_prepared(out: Path) -> dict[str, Any]:
    """Recount and rehash every shard against the manifest; fail naming the first damaged or missing one."""
    manifest = _finished_manifest(out)
    settings = manifest["settings"]
    for key, entry in sorted(manifest["shards"].items()):
        path = out / entry["file"]
        fix = f"delete it and rerun `srtrain prepare {settings['source']} {out}` with the same settings"
        if not path.exists():
            raise DataError(f"shard {key} of '{out}' ({path.name}) is missing; rerun srtrain prepare to remake it")
        if file_problem(path, entry) or len(datasets.Dataset.from_file(str(path))) != entry["tiles"]:
            raise DataError(f"shard {path} is damaged (its checksum or tile count differs from {MANIFEST}); {fix}")
    return manifest


def load_prepared(out: Path) -> datasets.Dataset:
    """The tiles of a prepared folder as one memory-mapped `datasets.Dataset` (no copy, nothing decoded)."""
    manifest = _finished_manifest(out)
    files = [str(out / entry["file"]) for _, entry in sorted(manifest["shards"].items())]
    return datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])


def is_prepared(ds: datasets.Dataset | datasets.IterableDataset, hr_column: str) -> bool:
    """Tiles made by `prepare` (read from its folder, or from the Hub after `push_to_hub`)."""
    features = ds.features or {}
    return features.get(hr_column) == datasets.Value("binary") and all(c in features for c in SHAPE_COLUMNS)


def _byte_spans(column: pa.ChunkedArray) -> tuple[list[np.ndarray], np.ndarray]:
    """A binary column's chunks as uint8 views of their data buffers (no copy), and per row (chunk, start, stop)."""
    chunks, spans = [], []
    for k, chunk in enumerate(column.chunks):
        _, offsets, data = chunk.buffers()
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        bounds = np.frombuffer(offsets, offset_type)[chunk.offset : chunk.offset + len(chunk) + 1].astype(np.int64)
        chunks.append(np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8))
        spans.append(np.stack([np.full(len(chunk), k), bounds[:-1], bounds[1:]], axis=1))
    return chunks, np.concatenate(spans) if spans else np.empty((0, 3), np.int64)


@dataclass
class PreparedImages:
    """The tiles of a prepared dataset with `ImageSet`'s interface: `hr`/`lr` copy a tile out of the mapped file,
    `arrays` gives views of it (training copies only the patch it cuts).

    `dataset` is as loaded (no `select`: its Arrow table is read directly); `rows` are the tiles in use when some
    were skipped, all of them when None."""

    dataset: datasets.Dataset
    source: str
    hr_column: str
    lr_column: str | None
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        shapes = self.dataset.select_columns(list(SHAPE_COLUMNS)).with_format("numpy")
        self.shapes = np.stack([shapes[c] for c in SHAPE_COLUMNS], axis=1)  # (tiles, 3): channels, height, width
        if self.rows is None:
            self.rows = np.arange(len(self.dataset))
        self.shapes = self.shapes[self.rows]

    def __getstate__(self) -> dict[str, Any]:
        """Loader workers started by spawn reopen the mapped files (`datasets` pickles them by path): drop the
        Arrow columns, which would pickle as copies of their data."""
        return {k: v for k, v in self.__dict__.items() if k != "columns"}

    @functools.cached_property
    def columns(self) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
        """Per pixel column of the mapped Arrow table: each chunk's bytes as a numpy view of the file, and per
        tile its (chunk, start, stop) in them. A tile is then one slice (3 us); through Arrow scalars it took
        50 us, through a `datasets` row, which converts every column to Python objects, 300 us."""
        table = self.dataset.data
        return {c: _byte_spans(table.column(c)) for c in (self.hr_column, self.lr_column) if c}

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, i: int) -> str:
        return self.dataset[int(self.rows[i])]["name"]

    def size(self, column: str, i: int) -> tuple[int, int]:
        _, h, w = self.shapes[i]
        s = 1 if column == self.hr_column else int(column.rsplit("x", 1)[1])
        return int(h) // s, int(w) // s

    def mode(self, i: int) -> str:
        """'RGB', or 'L' for a one-channel tile: `prepare` stored them decoded to 8 bits."""
        return "RGB" if self.shapes[i][0] == 3 else "L"

    def _mapped(self, column: str, i: int) -> np.ndarray:
        """Tile `i` of `column` as a read-only CHW view of the mapped file: nothing is copied."""
        chunks, spans = self.columns[column]
        chunk, start, stop = spans[self.rows[i]]
        return chunks[chunk][start:stop].reshape(int(self.shapes[i][0]), *self.size(column, i))

    def hr(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._mapped(self.hr_column, i).copy())

    def lr(self, i: int) -> torch.Tensor | None:
        return None if self.lr_column is None else torch.from_numpy(self._mapped(self.lr_column, i).copy())

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Tile `i`'s HR and LR (None unless paired) as views of the mapped file: a patch is the only copy made."""
        return self._mapped(self.hr_column, i), None if self.lr_column is None else self._mapped(self.lr_column, i)

    def problems(self, scale: int, min_hr: int, fix: str) -> list[tuple[int, str]]:
        """(index, message) of every tile too small for training; fails at once if the LR column is for another
        scale (a setting, not a bad tile). Tiles were decoded by `prepare`, so nothing else can be wrong."""
        if self.lr_column is not None and self.lr_column != f"lr_x{scale}":
            raise DataError(
                f"'{self.source}' LR column '{self.lr_column}' does not hold x{scale} LR tiles; set "
                f"--data.lr_column=lr_x{scale} if it was prepared with that scale, or leave LR to be made from HR"
            )
        small = np.flatnonzero(self.shapes[:, 1:].min(axis=1) < min_hr)
        return [
            (int(i), f"tile '{self.name(int(i))}' in '{self.source}' is {w}x{h}, smaller than {min_hr} px; {fix}")
            for i, (_, h, w) in zip(small, self.shapes[small], strict=True)
        ]

    def check(self, scale: int, min_hr: int, fix: str) -> None:
        """Fail before training if a tile is too small or the chosen LR column is for another scale."""
        bad = self.problems(scale, min_hr, fix)
        if bad:
            raise DataError(bad[0][1])

    def without_bad(self, scale: int, min_hr: int, fix: str, max_fraction: float) -> tuple[PreparedImages, list[str]]:
        """As `ImageSet.without_bad`: these tiles minus the too small ones, and a message per tile skipped."""
        bad = self.problems(scale, min_hr, fix)
        kept = good_rows(bad, len(self), max_fraction, f"tiles in '{self.source}'")
        if kept is None:
            return self, []
        rest = PreparedImages(self.dataset, self.source, self.hr_column, self.lr_column, self.rows[kept])
        return rest, [message for _, message in bad]

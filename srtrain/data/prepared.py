"""Prepared datasets: the format `srtrain prepare` (`srtrain.data.prepare`) writes, and its reader. HR images cut
once into decoded uint8 sub-images (tiles) in sharded Arrow files, read memory-mapped.

Why: with 2K images a loader either decodes a PNG for every patch (`data.cache=false`) or holds a decoded copy
of every image in every process (`data.cache=true`, 8 copies on an 8-GPU node). Arrow files are read through
the page cache instead, so the processes on a node share one copy and nothing is decoded while training.

OUT holds `shard-NNNNN.arrow` (Arrow IPC streams, `IMAGES_PER_SHARD` source images each) and `MANIFEST` (the
settings and, per finished shard, its image and tile counts, size and SHA-256). Columns: `name`
(`image.png@y,x`), `channels`, `height`, `width`, `hr` (CHW uint8 bytes) and, per scale `s`, `lr_xs`: the
MATLAB-exact bicubic LR of the whole image, cut at the tile's place.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch

from srtrain.data.images import DataError, good_rows
from srtrain.manifest import file_problem

MANIFEST = "srtrain_prepared.json"
IMAGES_PER_SHARD = 8  # about 250 MB of tiles per shard for 2K images at the default tile and stride
SHAPE_COLUMNS = ("channels", "height", "width")


def prepared_features(scales: tuple[int, ...]) -> datasets.Features:
    """The columns of a prepared dataset, one row per tile, with an LR column per scale in `scales`."""
    columns = {"name": datasets.Value("string"), **{c: datasets.Value("int32") for c in SHAPE_COLUMNS}}
    columns["hr"] = datasets.Value("binary")
    columns |= {f"lr_x{s}": datasets.Value("binary") for s in scales}
    return datasets.Features(columns)


def read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of prepared folder `out`, finished or not."""
    return json.loads((out / MANIFEST).read_text())


def _finished_manifest(out: Path) -> dict[str, Any]:
    manifest = read_manifest(out)
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
    """The tiles of a prepared dataset as `TrainImages`, like `ImageSet`: `hr`/`lr` copy a tile out of the mapped file,
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

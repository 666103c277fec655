"""Data sources through Hugging Face `datasets`, opened without decoding any image.

Sources: `default` (real photographs shipped inside scikit-image, so the default job needs no network),
a local folder of HR images, a Parquet/Arrow file or `save_to_disk` folder, or a Hub dataset id. Image
columns are read undecoded so that every image's header is checked (readable, large enough, LR size
matching HR) before training starts; pixels are decoded on first use and optionally cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import PIL.Image

from srtrain.config import DataConfig
from srtrain.data.images import DataError, ImageSet, TrainImages
from srtrain.data.prepared import MANIFEST, PreparedImages, is_prepared, load_prepared

ID_COLUMN = "_srtrain_id"  # a streamed example's number in the source, given before shuffling and splitting
MAX_SHARDS = 1024  # shards of a map-style source turned into a stream: the units whose order is shuffled
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# scikit-image's bundled photographs (no download): held-out images for validation, the rest for training.
DEFAULT_VAL = ("astronaut", "chelsea", "coffee")
DEFAULT_TRAIN = (
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "page",
)


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def _default_dataset(role: Literal["train", "val"]) -> datasets.Dataset:
    names = DEFAULT_TRAIN if role == "train" else DEFAULT_VAL
    images = [PIL.Image.fromarray(_skimage_photo(n)) for n in names]
    features = datasets.Features({"hr": datasets.Image(), "name": datasets.Value("string")})
    return datasets.Dataset.from_dict({"hr": images, "name": list(names)}, features=features)


def _folder_dataset(folder: Path) -> datasets.Dataset:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"folder '{folder}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    names = [str(p.relative_to(folder)) for p in files]
    features = datasets.Features({"hr": datasets.Image(), "name": datasets.Value("string")})
    return datasets.Dataset.from_dict({"hr": [str(p) for p in files], "name": names}, features=features)


def _folder_pair_dataset(hr_dir: Path, lr_dir: Path) -> datasets.Dataset:
    """HR images with the LR images of the same relative file name (e.g. MATLAB-made benchmark LR)."""
    hr = _folder_dataset(hr_dir)
    lr_paths = []
    for name in hr["name"]:
        matches = sorted(
            p for p in (lr_dir / name).parent.glob(Path(name).stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not matches:
            raise DataError(f"no LR image for '{name}' in '{lr_dir}': LR files must share the HR file names")
        lr_paths.append(str(matches[0]))
    return hr.add_column("lr", lr_paths).cast_column("lr", datasets.Image())


def _pick_split(ds: datasets.Dataset | datasets.DatasetDict, split: str, spec: str) -> datasets.Dataset:
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"'{spec}' has splits {list(ds)}, not '{split}': set --data.train_split/val_split")
        return ds[split]
    return ds


def data_root() -> Path:
    """Where relative data paths in jobs are looked up: $SRTRAIN_DATA, else `data/` in the repository."""
    return Path(os.environ.get("SRTRAIN_DATA", Path(__file__).resolve().parents[2] / "data")).expanduser()


def resolve_path(spec: str) -> Path:
    """A local path as given if it exists, else relative to the data root (jobs name `T91`, `Set5`, ...)."""
    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute():
        return path
    return data_root() / path


def missing_source(spec: str) -> str:
    """Why `spec` can name no source at all, found without opening anything (so `srtrain check-config` can say it
    before a job is queued): '' when it is `default`, an existing path or folder pair, or of a Hub id's form."""
    if spec == "default":
        return ""
    if "," in spec:
        for folder in (resolve_path(part) for part in spec.split(",", 1)):
            if not folder.is_dir():
                return f"'{folder}' in the folder pair '{spec}' is not a folder (expected HR_DIR,LR_DIR)"
        return ""
    hub_id = not spec.startswith((".", "/", "~")) and spec.count("/") == 1
    if hub_id or resolve_path(spec).exists():
        return ""
    return (
        f"data source '{spec}' is neither a local path (here or under the data root {data_root()}, set by "
        "$SRTRAIN_DATA) nor a Hub dataset id of the form user/name"
    )


def load_source(spec: str, split: str, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """Open one data source as a `datasets.Dataset` without decoding any image.

    `default` has two splits, `train` and any other (the validation photographs). `HR_DIR,LR_DIR` names a folder
    pair whose LR images share the HR file names. With `streaming`, Parquet/Arrow files and Hub ids open as a
    `datasets.IterableDataset` read as iterated; the other sources stay map-style.
    """
    if spec == "default":
        return _default_dataset("train" if split == "train" else "val")
    if problem := missing_source(spec):
        raise DataError(problem)
    if "," in spec:
        hr_dir, lr_dir = (resolve_path(part) for part in spec.split(",", 1))
        return _folder_pair_dataset(hr_dir, lr_dir)
    path = resolve_path(spec)
    if path.is_dir():
        if (path / MANIFEST).exists():
            return load_prepared(path)
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _pick_split(datasets.load_from_disk(str(path)), split, spec)
        for kind in ("parquet", "arrow"):
            files = sorted(str(p) for p in path.rglob(f"*.{kind}"))
            if files:
                return datasets.load_dataset(kind, data_files=files, split="train", streaming=streaming)
        return _folder_dataset(path)
    if path.is_file():
        if path.suffix in (".parquet", ".arrow"):
            return datasets.load_dataset(path.suffix[1:], data_files=str(path), split="train", streaming=streaming)
        raise DataError(f"'{spec}' is a file but not .parquet or .arrow; pass a folder of images instead")
    try:
        return datasets.load_dataset(spec, split=split, streaming=streaming)
    except Exception as err:
        raise DataError(
            f"could not load '{spec}' (split '{split}') from the Hugging Face Hub: {err}. "
            "Check the id and split, the network, or download it and pass the local folder."
        ) from err


def image_columns(
    ds: datasets.Dataset | datasets.IterableDataset, cfg: DataConfig, spec: str
) -> tuple[datasets.Dataset | datasets.IterableDataset, str | None]:
    """The source with its HR (and LR, when present) column read undecoded, and the LR column's name."""
    if ds.column_names is None:
        raise DataError(f"'{spec}' does not declare its columns when streamed; set --data.streaming=false")
    if cfg.hr_column not in ds.column_names:
        raise DataError(
            f"'{spec}' has no HR column '{cfg.hr_column}' (columns: {ds.column_names}); set --data.hr_column=NAME"
        )
    lr_column = cfg.lr_column if cfg.lr_column in ds.column_names else None
    for column in filter(None, (cfg.hr_column, lr_column)):
        ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds, lr_column


def load_images(cfg: DataConfig, role: Literal["train", "val"]) -> TrainImages:
    """Open the train or val source named in the config and check its columns."""
    spec = cfg.train if role == "train" else cfg.val
    split = cfg.train_split if role == "train" else cfg.val_split
    ds = load_source(spec, split)
    if role == "val" and cfg.max_val_images:
        ds = ds.select(range(min(cfg.max_val_images, len(ds))))
    if len(ds) == 0:
        raise DataError(f"'{spec}' (split '{split}') holds no images")
    if is_prepared(ds, cfg.hr_column):
        return PreparedImages(ds, spec, cfg.hr_column, cfg.lr_column if cfg.lr_column in ds.column_names else None)
    ds, lr_column = image_columns(ds, cfg, spec)
    return ImageSet(ds, spec, cfg.hr_column, lr_column, cfg.cache, keep_gray=role == "val" and cfg.gray == "direct")


def open_stream(cfg: DataConfig) -> tuple[datasets.IterableDataset, int | None, str | None]:
    """The training source as a stream of undecoded examples, each numbered (`ID_COLUMN`) in the source's order
    before any shuffling or splitting; also its number of examples when known, and its LR column.

    Map-style sources (`default`, image folders, `save_to_disk` folders) get the numbers as a column, then
    become a stream. Streamed files are numbered as read, in their fixed order: `map(with_indices=True)` counts
    per reader, so datasets must not reorder or interleave the files (its shuffle would, and so would
    `set_epoch`); `skip(0)` pins their order, leaving the shuffle to its buffer.
    """
    spec, split = cfg.train, cfg.train_split
    source = load_source(spec, split, streaming=True)
    if is_prepared(source, cfg.hr_column):
        raise DataError(f"'{spec}' is a prepared, memory-mapped dataset: train from it with --data.streaming=false")
    ds, lr_column = image_columns(source, cfg, spec)
    if isinstance(ds, datasets.Dataset):
        if len(ds) == 0:
            raise DataError(f"'{spec}' (split '{split}') holds no images")
        numbered = ds.add_column(ID_COLUMN, range(len(ds)))
        return numbered.to_iterable_dataset(num_shards=min(len(ds), MAX_SHARDS)), len(ds), lr_column
    info = ds.info.splits.get(split) if ds.info.splits else None
    numbered = ds.map(lambda _, i: {ID_COLUMN: i}, with_indices=True).skip(0)
    return numbered, info.num_examples if info else None, lr_column

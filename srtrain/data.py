"""HR/LR images through Hugging Face `datasets`, and the torch datasets that feed training and validation.

Sources: `default` (real photographs shipped inside scikit-image, so the default job needs no network),
a local folder of HR images, a Parquet/Arrow file or `save_to_disk` folder, or a Hub dataset id. Image
columns are read undecoded so that every image's header is checked (readable, large enough, LR size
matching HR) before training starts; pixels are decoded on first use and optionally cached.

Training randomness (crop position, flips, rotation) is a pure function of (seed, epoch, sample index):
the same sample gets the same patch whatever the number of processes or loader workers, and a resumed
run draws exactly the patches the interrupted one would have.
"""

from __future__ import annotations

import io
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset

from srtrain.config import DataConfig
from srtrain.degradation import imresize, modcrop

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


class DataError(ValueError):
    """A problem with the input data, naming the image or column and the fix."""


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
    return Path(os.environ.get("SRTRAIN_DATA", Path(__file__).resolve().parents[1] / "data")).expanduser()


def resolve_path(spec: str) -> Path:
    """A local path as given if it exists, else relative to the data root (jobs name `T91`, `Set5`, ...)."""
    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute():
        return path
    return data_root() / path


def load_source(spec: str, split: str) -> datasets.Dataset:
    """Open one data source as a `datasets.Dataset` without decoding any image.

    `HR_DIR,LR_DIR` names a folder pair whose LR images share the HR file names.
    """
    if "," in spec:
        hr_dir, lr_dir = (resolve_path(part) for part in spec.split(",", 1))
        for folder in (hr_dir, lr_dir):
            if not folder.is_dir():
                raise DataError(f"'{folder}' in the folder pair '{spec}' is not a folder (expected HR_DIR,LR_DIR)")
        return _folder_pair_dataset(hr_dir, lr_dir)
    path = resolve_path(spec)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _pick_split(datasets.load_from_disk(str(path)), split, spec)
        for kind in ("parquet", "arrow"):
            files = sorted(str(p) for p in path.rglob(f"*.{kind}"))
            if files:
                return datasets.load_dataset(kind, data_files=files, split="train")
        return _folder_dataset(path)
    if path.is_file():
        if path.suffix in (".parquet", ".arrow"):
            return datasets.load_dataset(path.suffix[1:], data_files=str(path), split="train")
        raise DataError(f"'{spec}' is a file but not .parquet or .arrow; pass a folder of images instead")
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise DataError(
            f"data source '{spec}' is neither a local path (here or under the data root {data_root()}, "
            "set by $SRTRAIN_DATA) nor a Hub dataset id of the form user/name"
        )
    try:
        return datasets.load_dataset(spec, split=split)
    except Exception as err:
        raise DataError(
            f"could not load '{spec}' (split '{split}') from the Hugging Face Hub: {err}. "
            "Check the id and split, the network, or download it and pass the local folder."
        ) from err


@dataclass
class ImageSet:
    """The HR (and, when paired, LR) images of one split, decoded on demand into uint8 CHW tensors.

    Images are RGB; gray images are replicated to RGB unless `keep_gray`, which keeps them one channel.
    """

    dataset: datasets.Dataset
    source: str
    hr_column: str
    lr_column: str | None
    cache: bool = True
    keep_gray: bool = False
    _cache: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, i: int) -> str:
        if "name" in self.dataset.column_names:
            return str(self.dataset[i]["name"])
        ref = self.dataset[i][self.hr_column]
        return Path(ref["path"]).name if ref.get("path") else f"{self.source}[{i}]"

    def _open(self, column: str, i: int) -> PIL.Image.Image:
        ref = self.dataset[i][column]
        try:
            return PIL.Image.open(io.BytesIO(ref["bytes"]) if ref.get("bytes") else ref["path"])
        except (OSError, PIL.UnidentifiedImageError) as err:
            raise DataError(
                f"image '{self.name(i)}' ({column}) in '{self.source}' cannot be read ({err}); replace or remove it"
            ) from err

    def size(self, column: str, i: int) -> tuple[int, int]:
        """(height, width) from the image header alone."""
        width, height = self._open(column, i).size
        return height, width

    def _decode(self, column: str, i: int) -> torch.Tensor:
        key = (column, i)
        if key in self._cache:
            return self._cache[key]
        try:
            image = self._open(column, i)
            gray = self.keep_gray and image.mode in ("L", "I", "I;16", "1")
            pixels = np.asarray(image.convert("L" if gray else "RGB"))
        except OSError as err:
            raise DataError(
                f"image '{self.name(i)}' ({column}) in '{self.source}' is corrupt ({err}); replace or remove it"
            ) from err
        tensor = torch.from_numpy(pixels.copy()).reshape(*pixels.shape[:2], -1).permute(2, 0, 1).contiguous()
        if self.cache:
            self._cache[key] = tensor
        return tensor

    def hr(self, i: int) -> torch.Tensor:
        return self._decode(self.hr_column, i)

    def lr(self, i: int) -> torch.Tensor | None:
        return None if self.lr_column is None else self._decode(self.lr_column, i)

    def check(self, scale: int, min_hr: int, fix: str) -> None:
        """Fail before training if an image is unreadable, too small, or its LR does not match HR/scale."""
        for i in range(len(self)):
            h, w = self.size(self.hr_column, i)
            if min(h, w) < min_hr:
                raise DataError(
                    f"image '{self.name(i)}' in '{self.source}' is {w}x{h}, smaller than {min_hr} px; {fix}"
                )
            if self.lr_column is not None:
                got = self.size(self.lr_column, i)
                want = (h // scale, w // scale)
                if got != want:
                    raise DataError(
                        f"LR image '{self.name(i)}' in '{self.source}' is {got[1]}x{got[0]}, but HR {w}x{h} at "
                        f"x{scale} needs {want[1]}x{want[0]}; check --scale or the '{self.lr_column}' column"
                    )


def load_images(cfg: DataConfig, role: Literal["train", "val"]) -> ImageSet:
    """Open the train or val source named in the config and check its columns."""
    spec = cfg.train if role == "train" else cfg.val
    split = cfg.train_split if role == "train" else cfg.val_split
    ds = _default_dataset(role) if spec == "default" else load_source(spec, split)
    if cfg.hr_column not in ds.column_names:
        raise DataError(
            f"'{spec}' has no HR column '{cfg.hr_column}' (columns: {ds.column_names}); set --data.hr_column=NAME"
        )
    lr_column = cfg.lr_column if cfg.lr_column in ds.column_names else None
    for column in filter(None, (cfg.hr_column, lr_column)):
        ds = ds.cast_column(column, datasets.Image(decode=False))
    if role == "val" and cfg.max_val_images:
        ds = ds.select(range(min(cfg.max_val_images, len(ds))))
    if len(ds) == 0:
        raise DataError(f"'{spec}' (split '{split}') holds no images")
    return ImageSet(ds, spec, cfg.hr_column, lr_column, cfg.cache, keep_gray=role == "val" and cfg.gray == "direct")


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return zlib.crc32(f"{seed}:{epoch}:{index}".encode())


def augment(lr: torch.Tensor, hr: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip / 90-degree rotation (the 8 dihedral transforms) applied to both images."""
    hflip, vflip, transpose = torch.randint(0, 2, (3,), generator=g).tolist()
    if hflip:
        lr, hr = lr.flip(-1), hr.flip(-1)
    if vflip:
        lr, hr = lr.flip(-2), hr.flip(-2)
    if transpose:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return lr.contiguous(), hr.contiguous()


class TrainPatches(Dataset):
    """`repeat` random aligned (LR, HR) patches per image per epoch, as float tensors in [0, 1]."""

    def __init__(self, images: ImageSet, scale: int, patch_size: int, repeat: int, seed: int) -> None:
        self.images, self.scale, self.patch_size = images, scale, patch_size
        self.repeat, self.seed, self.epoch = repeat, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        g = torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, index))
        i = index % len(self.images)
        s, lr_patch = self.scale, self.patch_size // self.scale
        hr = modcrop(self.images.hr(i), s)
        lr = self.images.lr(i)
        lr_h, lr_w = hr.shape[-2] // s, hr.shape[-1] // s
        y = int(torch.randint(0, lr_h - lr_patch + 1, (1,), generator=g))
        x = int(torch.randint(0, lr_w - lr_patch + 1, (1,), generator=g))
        hr_crop = hr[:, y * s : (y + lr_patch) * s, x * s : (x + lr_patch) * s].float() / 255
        if lr is None:
            lr_crop = imresize(hr_crop, 1 / s).clamp_(0, 1)
        else:
            lr_crop = lr[:, y : y + lr_patch, x : x + lr_patch].float() / 255
        lr_crop, hr_crop = augment(lr_crop, hr_crop, g)
        return {"lr": lr_crop, "hr": hr_crop, "index": index}


class ValImages(Dataset):
    """Whole validation images cropped to a multiple of the scale; LR made by MATLAB bicubic on uint8."""

    def __init__(self, images: ImageSet, scale: int) -> None:
        self.images, self.scale = images, scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        hr = modcrop(self.images.hr(index), self.scale)
        lr = self.images.lr(index)
        if lr is None:
            lr = imresize(hr, 1 / self.scale)
        return {"lr": lr.float() / 255, "hr": hr.float() / 255, "index": index}

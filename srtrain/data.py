"""HR/LR images through Hugging Face `datasets`, and the torch datasets that feed training and validation.

Sources: `default` (real photographs shipped inside scikit-image, so the default job needs no network),
a local folder of HR images, a Parquet/Arrow file or `save_to_disk` folder, or a Hub dataset id. Image
columns are read undecoded so that every image's header is checked (readable, large enough, LR size
matching HR) before training starts; pixels are decoded on first use and optionally cached.

With `data.streaming` the training source is read instead as a stream (`datasets.IterableDataset`) that
`split_dataset_by_node` splits across processes; each image is checked as it arrives.

Training randomness (crop position, flips, rotation) is a pure function of (seed, epoch, sample index),
and sample `index` is patch `index % repeat` of image `index // repeat` in both the map-style and the
streaming path: the same sample gets the same patch whatever the number of processes or loader workers,
streamed or not, and a resumed run draws exactly the patches the interrupted one would have.
"""

from __future__ import annotations

import io
import itertools
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import datasets
import numpy as np
import PIL.Image
import torch
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from srtrain.config import DataConfig
from srtrain.degradation import imresize, modcrop

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
ID_COLUMN = "_srtrain_id"  # a streamed example's number in the source, given before shuffling and splitting
SHUFFLE_BUFFER = 128  # undecoded examples each process holds to shuffle a stream (Parquet rows hold the bytes)
MIX_IMAGES = 16  # decoded images whose patches a stream interleaves, so that a batch mixes images
MAX_SHARDS = 1024  # shards of a map-style source turned into a stream: the units whose order is shuffled
T = TypeVar("T")

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


def load_source(spec: str, split: str, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """Open one data source as a `datasets.Dataset` without decoding any image.

    `HR_DIR,LR_DIR` names a folder pair whose LR images share the HR file names. With `streaming`, Parquet/Arrow
    files and Hub ids open as a `datasets.IterableDataset` read as iterated; the other sources stay map-style.
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
                return datasets.load_dataset(kind, data_files=files, split="train", streaming=streaming)
        return _folder_dataset(path)
    if path.is_file():
        if path.suffix in (".parquet", ".arrow"):
            return datasets.load_dataset(path.suffix[1:], data_files=str(path), split="train", streaming=streaming)
        raise DataError(f"'{spec}' is a file but not .parquet or .arrow; pass a folder of images instead")
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise DataError(
            f"data source '{spec}' is neither a local path (here or under the data root {data_root()}, "
            "set by $SRTRAIN_DATA) nor a Hub dataset id of the form user/name"
        )
    try:
        return datasets.load_dataset(spec, split=split, streaming=streaming)
    except Exception as err:
        raise DataError(
            f"could not load '{spec}' (split '{split}') from the Hugging Face Hub: {err}. "
            "Check the id and split, the network, or download it and pass the local folder."
        ) from err


def _example_name(example: dict[str, Any], hr_column: str, fallback: str) -> str:
    if "name" in example:
        return str(example["name"])
    ref = example[hr_column]
    return Path(ref["path"]).name if ref.get("path") else fallback


def _open_image(ref: dict[str, Any], column: str, name: str, source: str) -> PIL.Image.Image:
    try:
        return PIL.Image.open(io.BytesIO(ref["bytes"]) if ref.get("bytes") else ref["path"])
    except (OSError, PIL.UnidentifiedImageError) as err:
        raise DataError(
            f"image '{name}' ({column}) in '{source}' cannot be read ({err}); replace or remove it"
        ) from err


def _decode_image(ref: dict[str, Any], column: str, name: str, source: str, keep_gray: bool) -> torch.Tensor:
    """uint8 CHW pixels: RGB, or one channel for a gray image when `keep_gray`."""
    try:
        image = _open_image(ref, column, name, source)
        gray = keep_gray and image.mode in ("L", "I", "I;16", "1")
        pixels = np.asarray(image.convert("L" if gray else "RGB"))
    except OSError as err:
        raise DataError(f"image '{name}' ({column}) in '{source}' is corrupt ({err}); replace or remove it") from err
    return torch.from_numpy(pixels.copy()).reshape(*pixels.shape[:2], -1).permute(2, 0, 1).contiguous()


def _check_image(
    example: dict[str, Any],
    name: str,
    source: str,
    columns: tuple[str, str | None],
    scale: int,
    min_hr: int,
    fix: str,
) -> None:
    """Fail, naming the image, if it is unreadable, too small, or its LR does not match HR/scale (headers only)."""
    hr_column, lr_column = columns
    width, height = _open_image(example[hr_column], hr_column, name, source).size
    if min(height, width) < min_hr:
        raise DataError(f"image '{name}' in '{source}' is {width}x{height}, smaller than {min_hr} px; {fix}")
    if lr_column is not None:
        got = _open_image(example[lr_column], lr_column, name, source).size
        want = (width // scale, height // scale)
        if got != want:
            raise DataError(
                f"LR image '{name}' in '{source}' is {got[0]}x{got[1]}, but HR {width}x{height} at "
                f"x{scale} needs {want[0]}x{want[1]}; check --scale or the '{lr_column}' column"
            )


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

    def _row(self, i: int) -> tuple[dict[str, Any], str]:
        """Row `i`, its images undecoded, and the name that errors give its image."""
        row = self.dataset[i]
        return row, _example_name(row, self.hr_column, f"{self.source}[{i}]")

    def name(self, i: int) -> str:
        return self._row(i)[1]

    def size(self, column: str, i: int) -> tuple[int, int]:
        """(height, width) from the image header alone."""
        row, name = self._row(i)
        width, height = _open_image(row[column], column, name, self.source).size
        return height, width

    def _decode(self, column: str, i: int) -> torch.Tensor:
        key = (column, i)
        if key in self._cache:
            return self._cache[key]
        row, name = self._row(i)
        tensor = _decode_image(row[column], column, name, self.source, self.keep_gray)
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
            row, name = self._row(i)
            _check_image(row, name, self.source, (self.hr_column, self.lr_column), scale, min_hr, fix)


def _image_columns(
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


def load_images(cfg: DataConfig, role: Literal["train", "val"]) -> ImageSet:
    """Open the train or val source named in the config and check its columns."""
    spec = cfg.train if role == "train" else cfg.val
    split = cfg.train_split if role == "train" else cfg.val_split
    ds, lr_column = _image_columns(_default_dataset(role) if spec == "default" else load_source(spec, split), cfg, spec)
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


def random_patch(
    hr: torch.Tensor, lr: torch.Tensor | None, scale: int, patch_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """An aligned (LR, HR) patch pair as floats in [0, 1], at a random position, randomly flipped and rotated.

    LR is cut from the paired LR image, else made from the HR patch by bicubic downscaling. All randomness
    comes from `seed`, so the map-style and the streaming path draw the same patch for the same sample.
    """
    g = torch.Generator().manual_seed(seed)
    s, lr_patch = scale, patch_size // scale
    hr = modcrop(hr, s)
    lr_h, lr_w = hr.shape[-2] // s, hr.shape[-1] // s
    y = int(torch.randint(0, lr_h - lr_patch + 1, (1,), generator=g))
    x = int(torch.randint(0, lr_w - lr_patch + 1, (1,), generator=g))
    hr_crop = hr[:, y * s : (y + lr_patch) * s, x * s : (x + lr_patch) * s].float() / 255
    if lr is None:
        lr_crop = imresize(hr_crop, 1 / s).clamp_(0, 1)
    else:
        lr_crop = lr[:, y : y + lr_patch, x : x + lr_patch].float() / 255
    return augment(lr_crop, hr_crop, g)


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
        i = index // self.repeat
        seed = _sample_seed(self.seed, self.epoch, index)
        lr, hr = random_patch(self.images.hr(i), self.images.lr(i), self.scale, self.patch_size, seed)
        return {"lr": lr, "hr": hr, "index": index}


def open_stream(cfg: DataConfig) -> tuple[datasets.IterableDataset, int | None, str | None]:
    """The training source as a stream of undecoded examples, each numbered (`ID_COLUMN`) in the source's order
    before any shuffling or splitting; also its number of examples when known, and its LR column.

    Map-style sources (`default`, image folders, `save_to_disk` folders) get the numbers as a column, then
    become a stream. Streamed files are numbered as read, in their fixed order: `map(with_indices=True)` counts
    per reader, so datasets must not reorder or interleave the files (its shuffle would, and so would
    `set_epoch`); `skip(0)` pins their order, leaving the shuffle to its buffer.
    """
    spec, split = cfg.train, cfg.train_split
    source = _default_dataset("train") if spec == "default" else load_source(spec, split, streaming=True)
    ds, lr_column = _image_columns(source, cfg, spec)
    if isinstance(ds, datasets.Dataset):
        if len(ds) == 0:
            raise DataError(f"'{spec}' (split '{split}') holds no images")
        numbered = ds.add_column(ID_COLUMN, range(len(ds)))
        return numbered.to_iterable_dataset(num_shards=min(len(ds), MAX_SHARDS)), len(ds), lr_column
    info = ds.info.splits.get(split) if ds.info.splits else None
    numbered = ds.map(lambda _, i: {ID_COLUMN: i}, with_indices=True).skip(0)
    return numbered, info.num_examples if info else None, lr_column


def _interleave(streams: Iterable[Iterator[T]], width: int, rng: np.random.Generator) -> Iterator[T]:
    """The items of all `streams`, `width` of them open at a time, each next item taken from a random one."""
    pending, active = iter(streams), []
    while True:
        active += itertools.islice(pending, width - len(active))
        if not active:
            return
        i = int(rng.integers(len(active)))
        item = next(active[i], None)
        if item is None:
            active.pop(i)
        else:
            yield item


def _unknown_length(source: str) -> DataError:
    return DataError(
        f"streamed '{source}' does not record how many images it holds, so an epoch has no known length (the "
        "LR schedule needs one, and every process must take the same number of steps); set --data.streaming=false"
    )


class StreamPatches(IterableDataset):
    """`repeat` patches per image per epoch, like `TrainPatches`, from the training source read as a stream.

    Every process reads the same stream, shuffled from (seed, epoch), and keeps one example in `world_size`
    (datasets' `split_dataset_by_node` with the "examples" strategy); a loader worker keeps one in
    `num_workers` of its process's share. So within an epoch no image is seen twice, all are seen, and every
    process holds as many images as the others, give or take one. Patches of `MIX_IMAGES` images at a time
    are interleaved, so that a batch is not `repeat` patches of one image.
    """

    def __init__(
        self, cfg: DataConfig, scale: int, patch_size: int, seed: int, fix: str, rank: int, world_size: int
    ) -> None:
        self.source, self.hr_column, self.repeat = cfg.train, cfg.hr_column, cfg.repeat
        self.stream, self.num_examples, self.lr_column = open_stream(cfg)
        self.scale, self.patch_size, self.seed, self.fix = scale, patch_size, seed, fix
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def images(self) -> range:
        """The training images' numbers (as many as `TrainPatches.images` holds)."""
        if self.num_examples is None:
            raise _unknown_length(self.source)
        return range(self.num_examples)

    def __len__(self) -> int:
        """Patches per epoch over all processes, as for `TrainPatches`."""
        return len(self.images) * self.repeat

    def batches_per_process(self, batch_size: int, num_workers: int) -> int | None:
        """Full batches that every process can draw per epoch (None when the image count is unknown).

        Each loader worker batches its own share and drops its last partial batch; the least over processes,
        so that all of them take the same number of steps.
        """
        if self.num_examples is None:
            return None
        workers = max(num_workers, 1)
        shards = self.world_size * workers  # split_dataset_by_node inside a worker: rank * workers + worker id
        return min(
            sum(
                len(range(rank * workers + w, self.num_examples, shards)) * self.repeat // batch_size
                for w in range(workers)
            )
            for rank in range(self.world_size)
        )

    def _patches(self, example: dict[str, Any]) -> Iterator[dict[str, torch.Tensor | int]]:
        number = example[ID_COLUMN]
        name = _example_name(example, self.hr_column, f"{self.source}[{number}]")
        _check_image(
            example, name, self.source, (self.hr_column, self.lr_column), self.scale, self.patch_size, self.fix
        )
        hr = _decode_image(example[self.hr_column], self.hr_column, name, self.source, keep_gray=False)
        lr = (
            None
            if self.lr_column is None
            else _decode_image(example[self.lr_column], self.lr_column, name, self.source, keep_gray=False)
        )
        for k in range(self.repeat):
            index = number * self.repeat + k
            lr_patch, hr_patch = random_patch(
                hr, lr, self.scale, self.patch_size, _sample_seed(self.seed, self.epoch, index)
            )
            yield {"lr": lr_patch, "hr": hr_patch, "index": index}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | int]]:
        worker = get_worker_info()
        stream = self.stream.shuffle(seed=self.seed, buffer_size=SHUFFLE_BUFFER)
        # "examples", not "shards": shards may differ in size (so would the processes' step counts), and
        # numbering by `map` must see the whole stream
        stream = split_dataset_by_node(stream, rank=self.rank, world_size=self.world_size, strategy="examples")
        if worker is not None:
            stream = split_dataset_by_node(stream, rank=worker.id, world_size=worker.num_workers)
        stream.set_epoch(self.epoch)
        # `iter()`, not `for example in stream`: inside a loader worker that would split by worker a second time
        examples = ({key: values[0] for key, values in batch.items()} for batch in stream.iter(batch_size=1))
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker.id if worker else 0])
        yield from _interleave(map(self._patches, examples), MIX_IMAGES, rng)


class StreamLoader(DataLoaderStateMixin):
    """Batches of a `DataLoader` over `StreamPatches`, moved to `device` and cut to the same number on every process.

    Not for `accelerator.prepare`, which would split the already split stream's batches across processes again.
    Like a prepared loader it tells accelerate where the epoch ends, so that gradient accumulation steps there.
    """

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device, self.dataset = loader, device, loader.dataset
        self.num_batches = self.dataset.batches_per_process(loader.batch_size, loader.num_workers)
        self.gradient_state, self._drop_last = GradientState(), True

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise _unknown_length(self.dataset.source)
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.begin()
        try:
            for n, batch in enumerate(itertools.islice(self.loader, self.num_batches), 1):
                self.end_of_dataloader = n == self.num_batches
                yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        finally:
            self.end()


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

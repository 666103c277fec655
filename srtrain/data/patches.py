"""The torch datasets that feed training (map-style and streamed patches) and validation (whole images).

Training randomness (crop position, flips, rotation) is a pure function of (seed, epoch, sample index),
and sample `index` is patch `index % repeat` of image `index // repeat` in both the map-style and the
streaming path: the same sample gets the same patch whatever the number of processes or loader workers,
streamed or not, and a resumed run draws exactly the patches the interrupted one would have.

With `data.streaming` the training source is read instead as a stream (`datasets.IterableDataset`) that
`split_dataset_by_node` splits across processes; each image is checked as it arrives.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from srtrain.config import DataConfig
from srtrain.data.images import DataError, TrainImages, check_image, decode_image, example_name
from srtrain.data.sources import ID_COLUMN, open_stream
from srtrain.degradation import imresize, modcrop

SHUFFLE_BUFFER = 128  # undecoded examples each process holds to shuffle a stream (Parquet rows hold the bytes)
MIX_IMAGES = 16  # decoded images whose patches a stream interleaves, so that a batch mixes images
T = TypeVar("T")


def sample_draw(seed: int, epoch: int, index: int) -> int:
    """128 random bits for one sample, a pure function of (seed, epoch, index): they pick its patch's position and
    its flips (hashing is ~20x cheaper per sample than seeding a generator, which on a small model is the gap to a
    bare training loop)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def patch_position(draw: int, lr_height: int, lr_width: int, lr_patch: int) -> tuple[int, int, int]:
    """Where a sample's patch lies and how it is turned, decoded from its `draw` (`sample_draw`): top and left in LR
    pixels (HR: times the scale) and the flip bits (1: left-right, 2: up-down, 4: transpose, applied in that order).

    `lr_height` and `lr_width` are the HR image's sides divided by the scale. The one decoding of the draw, shared
    by the host path (`random_patch`) and the device path (`srtrain.data.device`), so both cut the same patch."""
    positions_y, positions_x = lr_height - lr_patch + 1, lr_width - lr_patch + 1
    y, draw = draw % positions_y, draw // positions_y
    x, flips = draw % positions_x, draw // positions_x
    return y, x, flips & 7


def random_patch(
    hr: np.ndarray, lr: np.ndarray | None, scale: int, patch_size: int, draw: int
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """An aligned uint8 (LR, HR) patch pair at a random position, with one of the 8 flips/90-degree rotations.

    `hr` and `lr` are the whole images as (read-only) CHW arrays; the patch is cut, flipped and rotated as a view
    and copied once. LR is cut from the paired LR image, else None: `training_pair` makes it from the HR patch
    once the batch is on the device, so that loader workers only crop and flip uint8. All randomness comes from
    `draw` (`sample_draw`, decoded by `patch_position`), so the map-style, streaming and device paths cut the same
    patch for the same sample.
    """
    s, lr_patch = scale, patch_size // scale
    y, x, flips = patch_position(draw, hr.shape[-2] // s, hr.shape[-1] // s, lr_patch)

    def cut(image: np.ndarray, top: int, left: int, size: int) -> torch.Tensor:
        view = image[:, top : top + size, left : left + size]
        view = view[:, :, ::-1] if flips & 1 else view
        view = view[:, ::-1] if flips & 2 else view
        view = view.transpose(0, 2, 1) if flips & 4 else view
        return torch.from_numpy(np.array(view, order="C"))

    hr_patch = cut(hr, y * s, x * s, lr_patch * s)
    return None if lr is None else cut(lr, y, x, lr_patch), hr_patch


def _sample(lr: torch.Tensor | None, hr: torch.Tensor, index: int) -> dict[str, torch.Tensor | int]:
    return {"hr": hr, "index": index} if lr is None else {"lr": lr, "hr": hr, "index": index}


def training_pair(batch: dict[str, torch.Tensor], scale: int) -> dict[str, torch.Tensor]:
    """The batch with float (LR, HR) in [0, 1], its uint8 patches converted where it lies (on the device).

    Without paired LR, LR is the HR patches downscaled by the MATLAB-exact bicubic in one batched call,
    identical to downscaling each patch on its own.
    """
    hr = batch["hr"].float().div_(255)
    lr = batch["lr"].float().div_(255) if "lr" in batch else imresize(hr, 1 / scale).clamp_(0, 1)
    return {**batch, "lr": lr, "hr": hr}


class TrainPatches(Dataset):
    """`repeat` random aligned uint8 (LR, HR) patches per image per epoch (HR only without paired LR)."""

    def __init__(self, images: TrainImages, scale: int, patch_size: int, repeat: int, seed: int) -> None:
        self.images, self.scale, self.patch_size = images, scale, patch_size
        self.repeat, self.seed, self.epoch = repeat, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        hr, lr = self.images.arrays(index // self.repeat)
        draw = sample_draw(self.seed, self.epoch, index)
        return _sample(*random_patch(hr, lr, self.scale, self.patch_size, draw), index)


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
        name = example_name(example, self.hr_column, f"{self.source}[{number}]")
        check_image(example, name, self.source, (self.hr_column, self.lr_column), self.scale, self.patch_size, self.fix)
        hr = decode_image(example[self.hr_column], self.hr_column, name, self.source, keep_gray=False).numpy()
        lr = (
            None
            if self.lr_column is None
            else decode_image(example[self.lr_column], self.lr_column, name, self.source, keep_gray=False).numpy()
        )
        for k in range(self.repeat):
            index = number * self.repeat + k
            draw = sample_draw(self.seed, self.epoch, index)
            yield _sample(*random_patch(hr, lr, self.scale, self.patch_size, draw), index)

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
        self.gradient_state = GradientState()  # the mixin's contract: begin()/end() register this loader there

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
    """Whole validation images cropped to a multiple of the scale; LR made by MATLAB bicubic on uint8.

    LR comes as float in [0, 1], the model's input; HR stays uint8, which is what the scores measure (no float
    copy to make and round back, a quarter of the bytes to move to the device)."""

    def __init__(self, images: TrainImages, scale: int) -> None:
        self.images, self.scale = images, scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        hr = modcrop(self.images.hr(index), self.scale)
        lr = self.images.lr(index)
        if lr is None:
            lr = imresize(hr, 1 / self.scale)
        return {"lr": lr.float() / 255, "hr": hr, "index": index}

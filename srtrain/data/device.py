"""Training patches cut where the model trains (`data.on_device`): the decoded uint8 training images held once on the
accelerator, and each batch cut from them by one gather.

Why: the host path (`TrainPatches`) cuts every patch in Python on the CPU and copies the batch to the device, so a
small model's GPU waits on the host between steps. Here the host only hashes each sample's draw (`sample_draw`,
decoded by `patch_position` as the host path decodes it) and computes the batch's gather indices, the flips and
rotations folded in (a few small numpy operations), and the device gathers the whole batch in one `torch.take`. The
batches are the host path's bit for bit: the same patches, in the same order (the same accelerate-prepared
DataLoader, sampler and sharding, over a dataset cut a batch at a time).

This module owns packing the images into one flat buffer per column (`pack_images`), where it is held
(`holding_device`), the indices (`patch_index`) and the gather (`cut_patches`), and the dataset whose batches are cut
so (`DevicePatches`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from srtrain.data.images import TrainImages
from srtrain.data.patches import patch_position, sample_draw

# the most of a GPU's free memory the images may take: the model, its activations and the optimizer need the rest
GPU_SHARE = 0.5


@dataclass
class FlatImages:
    """One column's images (HR or LR) in one flat uint8 buffer, `pixels`: image i's CHW pixels start at `starts[i]`,
    with `channels` x `sizes[i]` (height, width). `starts` and `sizes` stay on the host, where a batch's indices are
    computed; `pinned`: `pixels` is page-locked host memory, and so is every batch cut from it."""

    pixels: torch.Tensor
    starts: np.ndarray
    sizes: np.ndarray
    channels: int
    pinned: bool

    def to(self, device: torch.device) -> FlatImages:
        return replace(self, pixels=self.pixels.to(device))


def pack_images(arrays: list[np.ndarray], pin: bool) -> FlatImages:
    """`arrays` (uint8 CHW, all with one channel count) copied into one host buffer, page-locked when `pin` (for
    asynchronous copies to a GPU)."""
    channels = {array.shape[0] for array in arrays}
    if len(channels) != 1:  # a batch has one channel count; training images are RGB (gray is replicated)
        raise ValueError(f"training images with {sorted(channels)} channels cannot be batched together")
    counts = np.array([array.size for array in arrays], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    pixels = torch.empty(int(counts.sum()), dtype=torch.uint8, pin_memory=pin)
    flat = pixels.numpy()
    for array, start in zip(arrays, starts.tolist(), strict=True):
        flat[start : start + array.size] = array.reshape(-1)
    sizes = np.array([array.shape[1:] for array in arrays], dtype=np.int64)
    return FlatImages(pixels, starts, sizes, channels.pop(), pin)


def holding_device(nbytes: int, device: torch.device) -> tuple[torch.device, str]:
    """Where `nbytes` of training images are held for batches on `device`, and a line that says so: on the device
    itself, unless it is a GPU where they would take more than `GPU_SHARE` of the free memory; then in pinned host
    memory, where each batch is cut and copied to the GPU."""
    size = f"{nbytes / 2**20:,.1f} MiB of training images"
    if device.type != "cuda":
        return device, f"{size} held in memory on {device}, each batch cut there"
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes <= GPU_SHARE * free:
        return device, f"{size} held in GPU memory on {device} ({free / 2**20:,.0f} MiB was free), each batch cut there"
    return torch.device("cpu"), (
        f"{size} would take more than {GPU_SHARE:.0%} of the {free / 2**20:,.0f} MiB free on {device}: held in "
        "pinned host memory instead, each batch cut there and copied to the GPU"
    )


def patch_index(
    images: FlatImages, which: np.ndarray, tops: np.ndarray, lefts: np.ndarray, flips: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The flat indices in `images.pixels` of (N, C, size, size) patches of images `which` at (`tops`, `lefts`), each
    flipped and transposed by its `flips` bits as `random_patch` turns its view, as two parts whose broadcast sum is
    the index: `down` (N, C, size), where each output row starts, and `across` (N, size), each column's offset.

    The turns are folded in: output pixel (i, j) reads source row `top + (size-1-r if up-down else r)` and column
    `left + (size-1-q if left-right else q)`, with (r, q) = (j, i) when transposed, else (i, j)."""
    k = np.arange(size)

    def along(origin: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        return origin[:, None] + np.where(mirrored[:, None], size - 1 - k, k)

    heights, widths = images.sizes[which].T
    rows = along(tops, flips & 2 != 0) * widths[:, None]
    cols = along(lefts, flips & 1 != 0)
    transposed = (flips & 4 != 0)[:, None]
    down, across = np.where(transposed, cols, rows), np.where(transposed, rows, cols)
    planes = images.starts[which][:, None] + np.arange(images.channels) * (heights * widths)[:, None]  # (N, C)
    return planes[:, :, None] + down[:, None, :], across


def cut_patches(
    images: FlatImages, which: np.ndarray, tops: np.ndarray, lefts: np.ndarray, flips: np.ndarray, size: int
) -> torch.Tensor:
    """The patches `patch_index` places, (N, C, size, size) uint8, cut by one gather (`torch.take`) where the images
    lie. The index parts go there in one copy; the full index is made there by one broadcast add."""
    down, across = patch_index(images, which, tops, lefts, flips, size)
    parts = torch.from_numpy(np.concatenate([down.ravel(), across.ravel()]))
    if images.pixels.is_cuda:
        parts = parts.pin_memory()  # copied without waiting on the steps queued before it
    parts = parts.to(images.pixels.device, non_blocking=True)
    index = parts[: down.size].view(down.shape)[..., None] + parts[down.size :].view(across.shape)[:, None, None, :]
    out = torch.empty(index.shape, dtype=torch.uint8, device=index.device, pin_memory=images.pinned)
    return torch.take(images.pixels, index, out=out)


def whole_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate function over `DevicePatches`: its batches come cut whole."""
    return batch


class DevicePatches(Dataset):
    """`TrainPatches`' samples, cut a batch at a time where the images are held and returned on `device`.

    A DataLoader with `collate_fn=whole_batch` calls `__getitems__` with each batch's sample indices, so its sampler,
    shuffle and (once accelerate prepares it) sharding and skipping decide the batches exactly as for `TrainPatches`.
    The loader must run in the main process (no workers): the images may be on a GPU, and a batch is one gather."""

    def __init__(
        self, images: TrainImages, scale: int, patch_size: int, repeat: int, seed: int, device: torch.device
    ) -> None:
        arrays = [images.arrays(i) for i in range(len(images))]
        hr = [pair[0] for pair in arrays]
        lr = None if arrays[0][1] is None else [pair[1] for pair in arrays]
        store, self.where = holding_device(sum(a.nbytes for a in hr + (lr or [])), device)
        pin = store.type == "cpu" and device.type == "cuda"
        self.hr = pack_images(hr, pin).to(store)
        self.lr = None if lr is None else pack_images(lr, pin).to(store)
        self.hr_sizes = self.hr.sizes.tolist()  # Python ints, for `patch_position`'s arithmetic on 128-bit draws
        self.images = range(len(images))  # the training images' numbers (as many as `TrainPatches.images` holds)
        self.scale, self.patch_size, self.repeat, self.seed, self.device = scale, patch_size, repeat, seed, device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of samples `indices` on the training device: sample `index` is patch `index % repeat` of image
        `index // repeat`, placed and turned by `patch_position` from `sample_draw`, as `TrainPatches` cuts it. The
        host places every sample and computes the gather indices; the device cuts."""
        s, lr_patch = self.scale, self.patch_size // self.scale
        rows = []
        for index in indices:
            height, width = self.hr_sizes[index // self.repeat]
            place = patch_position(sample_draw(self.seed, self.epoch, index), height // s, width // s, lr_patch)
            rows.append((index // self.repeat, *place))
        which, y, x, flips = np.array(rows, dtype=np.int64).T
        batch = {"hr": cut_patches(self.hr, which, y * s, x * s, flips, lr_patch * s), "index": torch.tensor(indices)}
        if self.lr is not None:
            batch = {"lr": cut_patches(self.lr, which, y, x, flips, lr_patch), **batch}
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

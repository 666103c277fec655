"""Image checks and decoding: headers are checked before training starts, pixels decoded on demand. Also
`TrainImages`, what training reads from a set of images: `ImageSet` here, a prepared dataset's tiles in
`srtrain.data.prepared`."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np
import PIL.Image
import torch


class DataError(ValueError):
    """A problem with the input data, naming the image or column and the fix."""


class ImageChangedError(DataError):
    """An image that passed the scan fails when training or validation decodes it: the file changed on disk.

    Raised in a loader worker, it comes back to the main process as `ImageChangedError(text)` where PyTorch puts
    the worker's whole traceback in `text`; only its last line, this error's own message, is kept, so that the
    command line prints one clear line."""

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            message = message.rsplit(f"{type(self).__name__}: ", 1)[-1].strip()
        super().__init__(message)


def example_name(example: dict[str, Any], hr_column: str, fallback: str) -> str:
    if "name" in example:
        return str(example["name"])
    ref = example[hr_column]
    return Path(ref["path"]).name if ref.get("path") else fallback


def open_image(ref: dict[str, Any], column: str, name: str, source: str) -> PIL.Image.Image:
    try:
        return PIL.Image.open(io.BytesIO(ref["bytes"]) if ref.get("bytes") else ref["path"])
    except (OSError, PIL.UnidentifiedImageError) as err:
        raise DataError(
            f"image '{name}' ({column}) in '{source}' cannot be read ({err}); replace or remove it"
        ) from err


def image_header(ref: dict[str, Any], column: str, name: str, source: str) -> tuple[tuple[int, int], str]:
    """(width, height) and PIL mode from the header alone; the file is closed at once, not when collected."""
    with open_image(ref, column, name, source) as image:
        return image.size, image.mode


def to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """The conversion rule for images that are not 8 bits per channel: 16-bit (and 32-bit integer) gray becomes
    8-bit gray by value * 255 / 65535, rounded (PIL's own `convert` clips every value above 255 to white). The
    rest is PIL's `convert("RGB")`: 8-bit gray replicated, palette looked up, alpha (RGBA, LA, PA) dropped, CMYK
    by 255 - C/M/Y times (1 - K) and 1-bit as 0/255; 16-bit RGB PNGs are already reduced to 8 bits by PIL."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64) * 255 / 65535
        return PIL.Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    return image


def decode_image(ref: dict[str, Any], column: str, name: str, source: str, keep_gray: bool) -> torch.Tensor:
    """uint8 CHW pixels: RGB, or one channel for a gray image when `keep_gray` (conversion rule: `to_8bit`)."""
    try:
        with open_image(ref, column, name, source) as opened:
            image = to_8bit(opened)
            gray = keep_gray and image.mode in ("L", "1")
            pixels = np.asarray(image.convert("L" if gray else "RGB"))
    except OSError as err:
        raise DataError(f"image '{name}' ({column}) in '{source}' is corrupt ({err}); replace or remove it") from err
    return torch.from_numpy(pixels.copy()).reshape(*pixels.shape[:2], -1).permute(2, 0, 1).contiguous()


def check_image(
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
    (width, height), _ = image_header(example[hr_column], hr_column, name, source)
    if min(height, width) < min_hr:
        raise DataError(f"image '{name}' in '{source}' is {width}x{height}, smaller than {min_hr} px; {fix}")
    if lr_column is not None:
        got, _ = image_header(example[lr_column], lr_column, name, source)
        want = (width // scale, height // scale)
        if got != want:
            raise DataError(
                f"LR image '{name}' in '{source}' is {got[0]}x{got[1]}, but HR {width}x{height} at "
                f"x{scale} needs {want[0]}x{want[1]}; check --scale or the '{lr_column}' column"
            )


class TrainImages(Protocol):
    """A set of images read by index, as training, validation, `srtrain check-data` and `srtrain eval` read it:
    whole images (`ImageSet`) or a prepared dataset's tiles (`PreparedImages`)."""

    def __len__(self) -> int: ...

    def name(self, i: int) -> str:
        """What messages call image `i`."""

    def mode(self, i: int) -> str:
        """Image `i`'s PIL mode as stored ('RGB', 'L', 'I;16', ...)."""

    def hr(self, i: int) -> torch.Tensor:
        """Image `i` as uint8 CHW pixels."""

    def lr(self, i: int) -> torch.Tensor | None:
        """Its paired LR image, None unless the source pairs one."""

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """HR and LR as uint8 CHW arrays to cut patches from, not to write to."""

    def problems(self, scale: int, min_hr: int, fix: str) -> list[tuple[int, str]]:
        """(index, message) of every image unusable at `scale` with HR sides of at least `min_hr`."""

    def check(self, scale: int, min_hr: int, fix: str) -> None:
        """Fail before training, naming the first unusable image."""

    def without_bad(self, scale: int, min_hr: int, fix: str, max_fraction: float) -> tuple[TrainImages, list[str]]:
        """These images minus the unusable ones, and a message per image left out."""


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
        return row, example_name(row, self.hr_column, f"{self.source}[{i}]")

    def name(self, i: int) -> str:
        return self._row(i)[1]

    def size(self, column: str, i: int) -> tuple[int, int]:
        """(height, width) from the image header alone."""
        row, name = self._row(i)
        (width, height), _ = image_header(row[column], column, name, self.source)
        return height, width

    def mode(self, i: int) -> str:
        """The HR image's PIL mode as stored (e.g. 'RGB', 'I;16', 'CMYK'), from its header."""
        row, name = self._row(i)
        return image_header(row[self.hr_column], self.hr_column, name, self.source)[1]

    def _decode(self, column: str, i: int) -> torch.Tensor:
        key = (column, i)
        if key in self._cache:
            return self._cache[key]
        row, name = self._row(i)
        tensor = decode_image(row[column], column, name, self.source, self.keep_gray)
        if self.cache:
            self._cache[key] = tensor
        return tensor

    def _pixels(self, column: str, i: int) -> torch.Tensor:
        """Pixels for training or evaluation, after the scan passed the image: a failure now means the file changed."""
        try:
            return self._decode(column, i)
        except DataError as err:
            raise ImageChangedError(
                f"image '{self.name(i)}' in '{self.source}' passed the check before training but cannot be decoded "
                f"now ({err.__cause__ or err}): the file changed on disk. Replace it and continue with --resume=auto "
                f"(`srtrain check-data {self.source}` checks the others), or leave it out: remove it, or start a new "
                "run with data.skip_bad=true"
            ) from err

    def hr(self, i: int) -> torch.Tensor:
        return self._pixels(self.hr_column, i)

    def lr(self, i: int) -> torch.Tensor | None:
        return None if self.lr_column is None else self._pixels(self.lr_column, i)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image `i`'s HR and LR (None unless paired) as uint8 CHW arrays to cut patches from, not to write to."""
        lr = self.lr(i)
        return self.hr(i).numpy(), None if lr is None else lr.numpy()

    def problems(self, scale: int, min_hr: int, fix: str) -> list[tuple[int, str]]:
        """Every unusable image as (index, message): unreadable, truncated or corrupt (the pixels are decoded, and
        cached when `cache`), too small, or an LR that does not match HR/scale.

        Images are checked on as many threads as PyTorch computes on: decoding releases the GIL, and nothing else
        runs yet, so a scan of PNGs takes about 1 / threads of its serial time."""

        def problem(i: int) -> str | None:
            try:
                row, name = self._row(i)
                check_image(row, name, self.source, (self.hr_column, self.lr_column), scale, min_hr, fix)
                self._decode(self.hr_column, i)
                if self.lr_column is not None:
                    self._decode(self.lr_column, i)
            except DataError as err:
                return str(err)
            return None

        with ThreadPoolExecutor(torch.get_num_threads()) as pool:
            found = list(pool.map(problem, range(len(self))))
        return [(i, message) for i, message in enumerate(found) if message is not None]

    def check(self, scale: int, min_hr: int, fix: str) -> None:
        """Fail before training, naming the first bad image, so that a truncated file stops the job now, not
        in epoch 1 (and not inside a loader worker's traceback)."""
        bad = self.problems(scale, min_hr, fix)
        if bad:
            more = f" ({len(bad) - 1} more bad images; `srtrain check-data` lists them all)" if len(bad) > 1 else ""
            raise DataError(bad[0][1] + more + "; or set data.skip_bad=true to train without them")

    def without_bad(self, scale: int, min_hr: int, fix: str, max_fraction: float) -> tuple[ImageSet, list[str]]:
        """This set minus its bad images, and a message per image skipped (see `good_rows`)."""
        bad = self.problems(scale, min_hr, fix)
        kept = good_rows(bad, len(self), max_fraction, f"images in '{self.source}'")
        if kept is None:
            return self, []
        rest = ImageSet(
            self.dataset.select(kept), self.source, self.hr_column, self.lr_column, self.cache, self.keep_gray
        )
        return rest, [message for _, message in bad]


def good_rows(bad: list[tuple[int, str]], total: int, max_fraction: float, what: str) -> list[int] | None:
    """The rows to keep when `bad` are skipped (None: nothing to skip); fails when more than `max_fraction` of
    them are bad, which means a wrong folder or scale rather than a few broken files."""
    if len(bad) > max_fraction * total:
        raise DataError(
            f"{len(bad)} of {total} {what} are bad, more than data.max_bad_fraction={max_fraction:g}; "
            f"the first: {bad[0][1]}"
        )
    if not bad:
        return None
    skipped = {i for i, _ in bad}
    return [i for i in range(total) if i not in skipped]

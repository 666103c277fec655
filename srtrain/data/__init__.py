"""HR/LR images through Hugging Face `datasets`, and the torch datasets that feed training and validation.

`sources` opens a data source without decoding it, `images` checks and decodes its images, `patches` turns
them into training patches (map-style or streamed) and validation images, `device` cuts the same patches a batch at
a time on the accelerator (`data.on_device`); `prepared` reads the tiles that `prepare` (srtrain prepare) writes.
"""

from srtrain.data.device import DevicePatches, whole_batch
from srtrain.data.images import DataError, ImageSet, TrainImages
from srtrain.data.patches import (
    StreamLoader,
    StreamPatches,
    TrainPatches,
    ValImages,
    random_patch,
    training_pair,
)
from srtrain.data.prepared import PreparedImages, load_prepared, verify_prepared
from srtrain.data.sources import data_root, load_images, load_source, missing_source, open_stream, resolve_path

__all__ = [
    "DataError",
    "DevicePatches",
    "ImageSet",
    "PreparedImages",
    "StreamLoader",
    "StreamPatches",
    "TrainImages",
    "TrainPatches",
    "ValImages",
    "data_root",
    "load_images",
    "load_prepared",
    "load_source",
    "missing_source",
    "open_stream",
    "random_patch",
    "resolve_path",
    "training_pair",
    "verify_prepared",
    "whole_batch",
]

"""The reader of prepared data sets (srtrain/data/prepared.py): memory-mapped tiles accepted wherever a source is,
for training and validation, also as the Parquet files the Hub holds; not streamed."""

import pytest
import torch
from helpers import needs_data

from srtrain.config import DataConfig
from srtrain.data import DataError, PreparedImages, TrainPatches, ValImages, load_images, load_prepared, open_stream

pytestmark = needs_data


def test_prepared_source_trains_and_validates(prepared):
    images = load_images(DataConfig(train=str(prepared), lr_column="lr_x2"), "train")
    images.check(2, 48, "fix")
    with pytest.raises(DataError, match="does not hold x4 LR tiles.*--data.lr_column=lr_x4"):
        images.check(4, 48, "fix")
    item = TrainPatches(images, 2, 48, repeat=2, seed=0)[5]
    assert item["hr"].shape == (3, 48, 48) and item["lr"].shape == (3, 24, 24) and item["hr"].dtype == torch.uint8
    hr_only = load_images(DataConfig(val=str(prepared), max_val_images=3), "val")
    assert hr_only.lr_column is None and ValImages(hr_only, 4)[2]["lr"].shape == (3, 24, 24)
    with pytest.raises(DataError, match="smaller than 128 px; lower it"):
        hr_only.check(4, 128, "lower it")
    tiles = load_images(DataConfig(train=str(prepared)), "train")  # data.skip_bad's path; every tile is 96x96
    assert tiles.without_bad(4, 96, "fix", 0.5) == (tiles, [])
    with pytest.raises(DataError, match=r"tiles in .* are bad, more than data.max_bad_fraction=0.5"):
        tiles.without_bad(4, 97, "fix", 0.5)


def test_pages_are_shared_not_copied(prepared):
    """Tiles come from memory-mapped Arrow files: the table is not loaded into the process."""
    ds = load_prepared(prepared)
    assert sorted(f["filename"] for f in ds.cache_files) == sorted(str(p) for p in prepared.glob("shard-*.arrow"))


def test_hub_layout_loads_back_as_prepared(prepared, tmp_path):
    """`push_to_hub` uploads Parquet files; the same files, read back, are a prepared source again."""
    ds = load_prepared(prepared)
    ds.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))
    images = load_images(DataConfig(train=str(tmp_path / "hub")), "train")
    reference = load_images(DataConfig(train=str(prepared)), "train")
    assert isinstance(images, PreparedImages) and len(images) == len(reference)
    assert torch.equal(images.hr(17), reference.hr(17)) and images.name(17) == reference.name(17)


def test_streaming_a_prepared_source_is_refused(prepared):
    with pytest.raises(DataError, match="prepared, memory-mapped dataset.*--data.streaming=false"):
        open_stream(DataConfig(train=str(prepared), streaming=True))

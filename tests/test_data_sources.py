"""Data sources through `datasets` (srtrain/data/sources.py): the offline default photographs, image folders,
folder pairs, Parquet and Arrow files, names under the data root; a missing source or column named with the fix."""

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from helpers import DATA, needs_data, paired_parquet, read_rgb

from srtrain.config import DataConfig
from srtrain.data import DataError, load_images

pytestmark = needs_data


def test_default_source_is_offline_real_photos():
    train = load_images(DataConfig(), "train")
    val = load_images(DataConfig(), "val")
    assert len(train) >= 10 and len(val) >= 3
    assert not {train.name(i) for i in range(len(train))} & {val.name(i) for i in range(len(val))}
    img = val.hr(0)
    assert img.dtype == torch.uint8 and img.shape[0] == 3 and min(img.shape[1:]) >= 256


def test_image_folder_source():
    images = load_images(DataConfig(train=str(DATA / "Set14")), "train")
    assert len(images) == 14 and images.lr_column is None
    names = [images.name(i) for i in range(len(images))]
    assert names == sorted(p.name for p in (DATA / "Set14").glob("*.png"))
    bridge = images.hr(names.index("bridge.png"))  # 8-bit grayscale file, replicated to RGB
    assert bridge.shape[0] == 3 and torch.equal(bridge[0], bridge[1])
    assert np.array_equal(images.hr(0).permute(1, 2, 0).numpy(), read_rgb(DATA / "Set14" / names[0]))


def test_parquet_source_paired_and_hr_only(tmp_path):
    path = paired_parquet(tmp_path, 4)
    paired = load_images(DataConfig(train=str(path)), "train")
    assert paired.lr_column == "lr" and len(paired) == 2
    assert paired.lr(0).shape[-1] * 4 == paired.hr(0).shape[-1]
    hr_only = load_images(DataConfig(train=str(path), lr_column=""), "train")
    assert hr_only.lr_column is None and hr_only.lr(0) is None
    folder = tmp_path / "as_folder"
    folder.mkdir()
    path.rename(folder / path.name)
    assert len(load_images(DataConfig(train=str(folder)), "train")) == 2


def test_arrow_save_to_disk_source(tmp_path):
    features = datasets.Features({"image": datasets.Image()})
    img = PIL.Image.open(DATA / "Set5" / "bird.png")
    datasets.Dataset.from_dict({"image": [img]}, features=features).save_to_disk(str(tmp_path / "ds"))
    images = load_images(DataConfig(train=str(tmp_path / "ds"), hr_column="image"), "train")
    assert images.hr(0).shape[1:] == (img.height, img.width)


def test_missing_column_names_the_fix(tmp_path):
    path = paired_parquet(tmp_path, 2)
    with pytest.raises(DataError, match=r"no HR column 'image'.*--data.hr_column"):
        load_images(DataConfig(train=str(path), hr_column="image"), "train")


def test_missing_path_is_not_sent_to_the_hub():
    with pytest.raises(DataError, match="neither a local path"):
        load_images(DataConfig(train="./no/such/folder"), "train")


def test_empty_folder_missing_path_and_parquet_without_hr(tmp_path):
    def scan(source):
        load_images(DataConfig(train=str(source)), "train").check(4, 48, "remove it")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        scan(tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere"):
        scan(tmp_path / "nowhere")
    datasets.Dataset.from_dict({"image": [str(DATA / "Set5" / "baby.png")]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="'hr'"):
        scan(tmp_path / "x.parquet")


def test_relative_names_resolve_under_the_data_root(monkeypatch):
    monkeypatch.setenv("SRTRAIN_DATA", str(DATA))
    assert len(load_images(DataConfig(train="T91"), "train")) == 91
    pair = load_images(DataConfig(val="Set5,matlab_lr/Set5/x2"), "val")
    assert pair.lr_column == "lr" and pair.lr(0).shape[-1] * 2 == pair.hr(0).shape[-1]
    with pytest.raises(DataError, match="neither a local path .* nor a Hub dataset id"):
        load_images(DataConfig(train="T92"), "train")

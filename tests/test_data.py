"""Data sources through `datasets`, aligned patches, and clear errors for bad input."""

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from conftest import DATA, needs_data, read_rgb
from torch.utils.data import DataLoader

from srtrain.config import DataConfig
from srtrain.data import DataError, TrainPatches, ValImages, load_images, training_pair
from srtrain.degradation import imresize, modcrop

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


def _paired_parquet(tmp_path, scale: int):
    hr, lr = [], []
    for name in ("baby", "butterfly"):
        hr_img = modcrop(torch.from_numpy(read_rgb(DATA / "Set5" / f"{name}.png")).permute(2, 0, 1), scale)
        hr.append(PIL.Image.fromarray(hr_img.permute(1, 2, 0).numpy()))
        lr.append(PIL.Image.fromarray(imresize(hr_img, 1 / scale).permute(1, 2, 0).numpy()))
    features = datasets.Features({"hr": datasets.Image(), "lr": datasets.Image()})
    path = tmp_path / f"paired_x{scale}.parquet"
    datasets.Dataset.from_dict({"hr": hr, "lr": lr}, features=features).to_parquet(str(path))
    return path


def test_parquet_source_paired_and_hr_only(tmp_path):
    path = _paired_parquet(tmp_path, 4)
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


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("paired", [False, True])
def test_training_patches_are_aligned(tmp_path, scale, paired):
    source = _paired_parquet(tmp_path, scale) if paired else DATA / "Set5"
    cfg = DataConfig(train=str(source), lr_column="lr" if paired else "")
    patch = 16 * scale
    patches = TrainPatches(load_images(cfg, "train"), scale, patch, repeat=4, seed=1)
    for index in range(len(patches)):
        item = patches[index]
        assert item["hr"].dtype == torch.uint8 and ("lr" in item) == paired  # workers only crop and flip uint8
        pair = training_pair({key: torch.as_tensor(value)[None] for key, value in item.items()}, scale)
        lr, hr = pair["lr"][0], pair["hr"][0]
        assert lr.shape == (3, 16, 16) and hr.shape == (3, patch, patch)
        # Downscaling the HR patch must give the LR patch away from the patch border (where the full
        # image had neighbours the patch lacks); a one-pixel shift would be off by far more than this.
        expected = imresize(hr, 1 / scale).clamp(0, 1)
        err = (expected - lr)[:, 3:-3, 3:-3].abs().max().item()
        assert err < 2 / 255, f"sample {index}: LR/HR misaligned (max error {err:.4f})"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_batched_degradation_equals_per_sample(scale):
    """LR made for a whole batch at once (as training does on the device) is the per-patch MATLAB bicubic."""
    patches = TrainPatches(load_images(DataConfig(train=str(DATA / "Set14")), "train"), scale, 24 * scale, 2, seed=5)
    batch = next(iter(DataLoader(patches, batch_size=16, shuffle=True)))
    assert set(batch) == {"hr", "index"} and batch["hr"].dtype == torch.uint8
    pair = training_pair(batch, scale)
    assert pair["lr"].shape == (16, 3, 24, 24) and torch.equal(pair["index"], batch["index"])
    for i, index in enumerate(batch["index"].tolist()):
        hr = patches[index]["hr"].float() / 255
        assert torch.equal(pair["hr"][i], hr)
        assert torch.equal(pair["lr"][i], imresize(hr, 1 / scale).clamp(0, 1)), f"patch {index}"


def test_patches_depend_only_on_seed_epoch_index():
    images = load_images(DataConfig(train=str(DATA / "Set5")), "train")
    a = TrainPatches(images, 4, 64, repeat=2, seed=3)
    b = TrainPatches(images, 4, 64, repeat=2, seed=3)
    b.set_epoch(0)
    assert torch.equal(a[7]["hr"], b[7]["hr"])
    b.set_epoch(1)
    assert not torch.equal(a[7]["hr"], b[7]["hr"])


def test_validation_images_are_whole_and_modcropped():
    images = load_images(DataConfig(val=str(DATA / "Set14")), "val")
    val = ValImages(images, 3)
    for i in range(len(val)):
        h, w = images.size("hr", i)
        assert val[i]["hr"].shape[1:] == (h - h % 3, w - w % 3)
        assert val[i]["lr"].shape[1:] == ((h - h % 3) // 3, (w - w % 3) // 3)


def test_corrupt_image_is_named(tmp_path):
    (tmp_path / "good.png").write_bytes((DATA / "Set5" / "bird.png").read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    images = load_images(DataConfig(train=str(tmp_path)), "train")
    with pytest.raises(DataError, match="broken.png.*replace or remove it"):
        images.check(4, 64, "fix")


def test_too_small_image_is_named():
    images = load_images(DataConfig(train=str(DATA / "Set14")), "train")
    with pytest.raises(DataError, match=r"'comic.png'.*250x361, smaller than 256 px; lower --patch_size"):
        images.check(4, 256, "lower --patch_size")


def test_missing_column_names_the_fix(tmp_path):
    path = _paired_parquet(tmp_path, 2)
    with pytest.raises(DataError, match=r"no HR column 'image'.*--data.hr_column"):
        load_images(DataConfig(train=str(path), hr_column="image"), "train")


def test_lr_of_wrong_size_is_caught(tmp_path):
    images = load_images(DataConfig(train=str(_paired_parquet(tmp_path, 2))), "train")
    with pytest.raises(DataError, match="needs .*check --scale"):
        images.check(4, 32, "fix")


def test_missing_path_is_not_sent_to_the_hub():
    with pytest.raises(DataError, match="neither a local path"):
        load_images(DataConfig(train="./no/such/folder"), "train")


def test_relative_names_resolve_under_the_data_root(monkeypatch):
    monkeypatch.setenv("SRTRAIN_DATA", str(DATA))
    assert len(load_images(DataConfig(train="T91"), "train")) == 91
    pair = load_images(DataConfig(val="Set5,matlab_lr/Set5/x2"), "val")
    assert pair.lr_column == "lr" and pair.lr(0).shape[-1] * 2 == pair.hr(0).shape[-1]
    with pytest.raises(DataError, match="neither a local path .* nor a Hub dataset id"):
        load_images(DataConfig(train="T92"), "train")

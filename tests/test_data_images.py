"""Images as training and validation read them (srtrain/data/images.py): unusable files refused before training
with the file named, or converted to 8-bit RGB by the documented rule (`to_8bit`); one real file per case."""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import DATA, needs_data, paired_parquet, photo, png_bytes

from srtrain.config import DataConfig
from srtrain.data import DataError, load_images

pytestmark = needs_data
SCALE, PATCH = 4, 48


def scan(folder: Path, role: str = "train") -> None:
    cfg = DataConfig(train=str(folder), val=str(folder))
    load_images(cfg, role).check(SCALE, PATCH, "remove it")


@pytest.mark.parametrize("role", ["train", "val"])
@pytest.mark.parametrize(
    ("name", "write", "needle"),
    [
        ("truncated.png", lambda p: p.write_bytes(png_bytes()[:-200]), "truncated.png"),
        ("not_an_image.png", lambda p: p.write_text("hello, I am text"), "not_an_image.png"),
        ("tiny.png", lambda p: photo(32).save(p), "smaller than 48 px"),
    ],
)
def test_unusable_images_are_refused_before_training_naming_the_file(photo_copy, role, name, write, needle):
    write(photo_copy / name)
    with pytest.raises(DataError) as err:
        scan(photo_copy, role)
    assert needle in str(err.value) and name in str(err.value)


def rgb_of(folder: Path, name: str) -> np.ndarray:
    images = load_images(DataConfig(train=str(folder)), "train")
    images.check(SCALE, PATCH, "remove it")
    (i,) = [i for i in range(len(images)) if images.name(i) == name]
    return images.hr(i).permute(1, 2, 0).numpy()


def test_conversion_rule_per_mode_and_bit_depth(photo_copy):
    folder = photo_copy
    base = np.asarray(photo())
    gray8 = np.asarray(photo().convert("L"))
    gray16 = gray8.astype(np.uint16) * 257  # 8-bit values spread over 16 bits
    PIL.Image.fromarray(gray16).save(folder / "gray16.png")
    photo().convert("L").save(folder / "gray.png")
    rgba = photo().convert("RGBA")
    rgba.putalpha(7)
    rgba.save(folder / "rgba.png")
    photo().convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=64).save(folder / "palette.png")
    photo().convert("CMYK").save(folder / "cmyk.jpg", quality=100)
    assert PIL.Image.open(folder / "gray16.png").mode == "I;16" and PIL.Image.open(folder / "cmyk.jpg").mode == "CMYK"

    assert np.array_equal(rgb_of(folder, "gray16.png"), np.repeat(gray8[..., None], 3, axis=2))  # not clipped white
    assert np.array_equal(rgb_of(folder, "gray.png"), np.repeat(gray8[..., None], 3, axis=2))
    assert np.array_equal(rgb_of(folder, "rgba.png"), base)  # alpha dropped, colour kept
    palette = PIL.Image.open(folder / "palette.png")
    assert np.array_equal(rgb_of(folder, "palette.png"), np.asarray(palette.convert("RGB")))
    assert np.abs(rgb_of(folder, "cmyk.jpg").astype(int) - base).mean() < 3  # JPEG loss only


def test_lr_hr_pair_whose_sizes_disagree_with_the_scale(tmp_path):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    hr.mkdir(), lr.mkdir()
    photo(96).save(hr / "a.png")
    photo(96).resize((30, 30)).save(lr / "a.png")
    with pytest.raises(DataError, match="LR image 'a.png'.* is 30x30, but HR 96x96 at x4 needs 24x24"):
        scan(Path(f"{hr},{lr}"))


def test_an_image_that_breaks_after_the_scan_is_named_when_used(photo_copy):
    folder = photo_copy
    photo().save(folder / "later.png")
    images = load_images(DataConfig(train=str(folder), cache=False), "train")
    images.check(SCALE, PATCH, "remove it")
    (folder / "later.png").write_bytes(png_bytes()[:-300])
    (i,) = [i for i in range(len(images)) if images.name(i) == "later.png"]
    with pytest.raises(DataError, match="later.png"):
        images.hr(i)


def test_skip_bad_skips_each_named_file_up_to_the_fraction(photo_copy):
    (photo_copy / "truncated.png").write_bytes(png_bytes()[:-200])
    (photo_copy / "not_an_image.png").write_text("text")
    images = load_images(DataConfig(train=str(photo_copy)), "train")
    good, skipped = images.without_bad(SCALE, PATCH, "remove it", max_fraction=0.5)
    assert len(good) == 4 and len(skipped) == 2
    assert any("truncated.png" in m for m in skipped) and any("not_an_image.png" in m for m in skipped)
    with pytest.raises(DataError, match="2 of 6 images .* more than data.max_bad_fraction=0.2"):
        images.without_bad(SCALE, PATCH, "remove it", max_fraction=0.2)


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


def test_lr_of_wrong_size_is_caught(tmp_path):
    images = load_images(DataConfig(train=str(paired_parquet(tmp_path, 2))), "train")
    with pytest.raises(DataError, match="needs .*check --scale"):
        images.check(4, 32, "fix")

"""Bad input data, one real file per case, in a training and a validation source: refused before training with
the file named, or converted to 8-bit RGB by the documented rule (`srtrain.data.images.to_8bit`)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import DATA, needs_data

from srtrain.checkpoint import checkpoint_problem, read_state
from srtrain.config import DataConfig
from srtrain.data import DataError, load_images
from srtrain.faults import READY_FILE

pytestmark = needs_data
SCALE, PATCH = 4, 48


@pytest.fixture()
def folder(tmp_path, photo_folder) -> Path:
    """A copy of the good four-photo training folder, to which each test adds one bad file."""
    return Path(shutil.copytree(photo_folder, tmp_path / "hr"))


def scan(folder: Path, role: str = "train") -> None:
    cfg = DataConfig(train=str(folder), val=str(folder))
    load_images(cfg, role).check(SCALE, PATCH, "remove it")


def photo(size: int = 96) -> PIL.Image.Image:
    return PIL.Image.open(DATA / "Set5" / "baby.png").convert("RGB").crop((0, 0, size, size))


@pytest.mark.parametrize("role", ["train", "val"])
@pytest.mark.parametrize(
    ("name", "write", "needle"),
    [
        ("truncated.png", lambda p: p.write_bytes(_png_bytes()[:-200]), "truncated.png"),
        ("not_an_image.png", lambda p: p.write_text("hello, I am text"), "not_an_image.png"),
        ("tiny.png", lambda p: photo(32).save(p), "smaller than 48 px"),
    ],
)
def test_unusable_images_are_refused_before_training_naming_the_file(folder, role, name, write, needle):
    write(folder / name)
    with pytest.raises(DataError) as err:
        scan(folder, role)
    assert needle in str(err.value) and name in str(err.value)


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    photo().save(buffer, "PNG")
    return buffer.getvalue()


def rgb_of(folder: Path, name: str) -> np.ndarray:
    images = load_images(DataConfig(train=str(folder)), "train")
    images.check(SCALE, PATCH, "remove it")
    (i,) = [i for i in range(len(images)) if images.name(i) == name]
    return images.hr(i).permute(1, 2, 0).numpy()


def test_conversion_rule_per_mode_and_bit_depth(folder):
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


def test_empty_folder_missing_path_and_parquet_without_hr(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        scan(tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere"):
        scan(tmp_path / "nowhere")
    import datasets

    datasets.Dataset.from_dict({"image": [str(DATA / "Set5" / "baby.png")]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="'hr'"):
        scan(tmp_path / "x.parquet")


def test_an_image_that_breaks_after_the_scan_is_named_when_used(folder):
    photo().save(folder / "later.png")
    images = load_images(DataConfig(train=str(folder), cache=False), "train")
    images.check(SCALE, PATCH, "remove it")
    (folder / "later.png").write_bytes(_png_bytes()[:-300])
    (i,) = [i for i in range(len(images)) if images.name(i) == "later.png"]
    with pytest.raises(DataError, match="later.png"):
        images.hr(i)


def test_an_image_that_breaks_during_training_stops_with_one_line_and_resumes(folder, tmp_path):
    """With loader workers and no cache: an image truncated on disk after the scan (while the fault hook pauses
    the run at epoch 1's last step) stops the run in epoch 2 with exit 2 and one line naming the file and the fix,
    not a worker's traceback; the last checkpoint stays intact, and once the file is replaced the run resumes."""
    photo().save(folder / "later.png")
    good = (folder / "later.png").read_bytes()
    out = tmp_path / "run"
    args = [sys.executable, "-m", "srtrain", f"--data.train={folder}", f"--data.val={DATA / 'Set5'}",
            "--data.max_val_images=1", "--data.num_workers=2", "--data.cache=false", "--data.repeat=2",
            "--batch_size=4", "--patch_size=48", "--epochs=2", "--checkpoint_every=1", f"--output_dir={out}",
            "--wandb.mode=disabled"]  # fmt: skip
    trainer = subprocess.Popen(
        args, cwd=tmp_path, env={**os.environ, "SRTRAIN_FAULT": "pause:step:2"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ready = tmp_path / READY_FILE
    while not ready.exists() or not ready.read_text():
        assert trainer.poll() is None, trainer.stderr.read()[-3000:]
        time.sleep(0.1)
    (folder / "later.png").write_bytes(good[:-300])
    ready.unlink()  # the run goes on
    _, stderr = trainer.communicate(timeout=300)
    assert trainer.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr and "worker" not in stderr
    (line,) = [line for line in stderr.splitlines() if "later.png" in line]
    assert line.startswith("error: image 'later.png'") and "srtrain check-data" in line
    assert "data.skip_bad=true" in line and "--resume=auto" in line
    last = out / "checkpoints" / "last"
    assert checkpoint_problem(last) == "" and read_state(last).epoch == 1
    (folder / "later.png").write_bytes(good)
    proc = subprocess.run(
        [*args, "--resume=auto"], cwd=tmp_path, env={**os.environ, "SRTRAIN_FAULT": ""}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_state(last).epoch == 2


def test_a_truncated_training_image_stops_the_job_before_training(folder, tmp_path):
    (folder / "truncated.png").write_bytes(_png_bytes()[:-200])
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "srtrain", f"--data.train={folder}", f"--data.val={DATA / 'Set5'}", "--epochs=1",
         "--data.num_workers=2", "--patch_size=48", f"--output_dir={out}", "--wandb.mode=disabled"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "truncated.png" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()  # a start that fails its checks leaves no run directory behind
    skip = ["--data.skip_bad=true", "--data.max_bad_fraction=0.5", "--data.repeat=4", "--batch_size=8"]
    proc = subprocess.run([*proc.args, *skip], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipped bad image 1/1" in proc.stdout and "truncated.png" in proc.stdout


def test_skip_bad_skips_each_named_file_up_to_the_fraction(folder):
    (folder / "truncated.png").write_bytes(_png_bytes()[:-200])
    (folder / "not_an_image.png").write_text("text")
    images = load_images(DataConfig(train=str(folder)), "train")
    good, skipped = images.without_bad(SCALE, PATCH, "remove it", max_fraction=0.5)
    assert len(good) == 4 and len(skipped) == 2
    assert any("truncated.png" in m for m in skipped) and any("not_an_image.png" in m for m in skipped)
    with pytest.raises(DataError, match="2 of 6 images .* more than data.max_bad_fraction=0.2"):
        images.without_bad(SCALE, PATCH, "remove it", max_fraction=0.2)


def test_check_data_command_prints_the_summary(folder):
    (folder / "truncated.png").write_bytes(_png_bytes()[:-200])
    PIL.Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(folder / "gray16.png")
    proc = subprocess.run(
        [sys.executable, "-m", "srtrain", "check-data", str(folder), "--patch_size", "48"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "truncated.png" in proc.stdout and "I;16 1" in proc.stdout and "RGB 4" in proc.stdout

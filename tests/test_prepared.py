"""`srtrain prepare`: exact tiles, resumable, verifiable, memory-mapped, accepted wherever a source is."""

import json
import os
import shutil
import subprocess

import pytest
import torch
from conftest import DATA, ROOT, needs_data, read_rgb

from srtrain.config import DataConfig
from srtrain.data import DataError, PreparedImages, TrainPatches, ValImages, load_images, load_prepared
from srtrain.data.prepare import prepare, tile_starts
from srtrain.data.prepared import MANIFEST, verify_prepared
from srtrain.data.sources import DEFAULT_TRAIN
from srtrain.degradation import imresize, modcrop

pytestmark = needs_data
ARGS = ["--tile", "96", "--stride", "96", "--scales", "2,4"]


def srtrain_prepare(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = ["python", "-m", "srtrain", "prepare", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Set14 (14 images: two shards) cut by the command line with two processes."""
    out = tmp_path_factory.mktemp("prepared") / "set14"
    proc = srtrain_prepare(str(DATA / "Set14"), str(out), *ARGS, "--num_proc", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "counts and SHA-256 checksums verified" in proc.stdout
    return out


def test_tile_starts_cover_the_image():
    assert tile_starts(500, 480, 240) == [0, 20]
    assert tile_starts(960, 480, 240) == [0, 240, 480]
    assert tile_starts(100, 480, 240) == [0]


def test_tiles_are_exact_crops_and_matlab_lr(prepared):
    manifest = json.loads((prepared / MANIFEST).read_text())
    assert manifest["settings"]["images"] == 14 and len(manifest["shards"]) == 2
    images = load_images(DataConfig(train=str(prepared), lr_column="lr_x4"), "train")
    assert isinstance(images, PreparedImages) and len(images) == sum(e["tiles"] for e in manifest["shards"].values())
    names = [images.name(i) for i in range(len(images))]
    i = names.index("baboon.png@96,192")
    whole = modcrop(torch.from_numpy(read_rgb(DATA / "Set14" / "baboon.png")).permute(2, 0, 1), 4)
    assert torch.equal(images.hr(i), whole[:, 96:192, 192:288])
    assert torch.equal(images.lr(i), imresize(whole, 1 / 4)[:, 24:48, 48:72])  # cut from the whole image's LR
    last = max((n for n in names if n.startswith("baboon.png@")), key=lambda n: tuple(map(int, n[11:].split(","))))
    _, h, w = whole.shape
    assert last == f"baboon.png@{h - 96},{w - 96}"  # the far edge is covered


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


def test_check_data_scans_a_prepared_source(prepared):
    """`srtrain check-data` takes a prepared folder like any source: its tiles, all RGB, none too small for 96 px."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = ["python", "-m", "srtrain", "check-data", str(prepared), "--patch_size", "96"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tiles = sum(e["tiles"] for e in json.loads((prepared / MANIFEST).read_text())["shards"].values())
    assert f"RGB {tiles}" in proc.stdout


def test_pages_are_shared_not_copied(prepared):
    """Tiles come from memory-mapped Arrow files: the table is not loaded into the process."""
    ds = load_prepared(prepared)
    assert sorted(f["filename"] for f in ds.cache_files) == sorted(str(p) for p in prepared.glob("shard-*.arrow"))


def test_resume_remakes_only_what_is_missing(prepared, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(prepared, out)
    manifest = json.loads((out / MANIFEST).read_text())
    kept = out / manifest["shards"]["00000"]["file"]
    before = kept.stat().st_mtime_ns
    # an interruption while shard 1 was written: its entry absent, a partial temporary file left behind
    lost = manifest["shards"].pop("00001")
    (out / lost["file"]).rename(out / (lost["file"] + ".tmp"))
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"unfinished srtrain prepare \(1 of 2 shards\): rerun `srtrain prepare"):
        load_images(DataConfig(train=str(out)), "train")
    done = prepare(str(DATA / "Set14"), out, tile=96, stride=96, scales=(2, 4))
    assert done["shards"]["00001"]["sha256"] == lost["sha256"] and kept.stat().st_mtime_ns == before
    assert not list(out.glob("*.tmp"))


def test_verify_names_a_damaged_shard_and_refuses_foreign_folders(prepared, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(prepared, out)
    shard = out / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="shard-00001.arrow is damaged.*delete it and rerun"):
        verify_prepared(out)
    with pytest.raises(DataError, match="was prepared with other settings"):
        prepare(str(DATA / "Set14"), out, tile=96, stride=48, scales=(2, 4))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    proc = srtrain_prepare(str(DATA / "Set5"), str(foreign))
    assert proc.returncode == 2 and "was not made by srtrain prepare" in proc.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(DataError, match="notes.txt' exists and was not made by srtrain prepare"):
        prepare(str(DATA / "Set5"), foreign / "notes.txt")  # a file, not a folder
    with pytest.raises(DataError, match="multiples of every scale"):
        prepare(str(DATA / "Set5"), tmp_path / "new", tile=100, stride=50, scales=(3,))


def test_hub_layout_loads_back_as_prepared(prepared, tmp_path):
    """`push_to_hub` uploads Parquet files; the same files, read back, are a prepared source again."""
    ds = load_prepared(prepared)
    ds.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))
    images = load_images(DataConfig(train=str(tmp_path / "hub")), "train")
    reference = load_images(DataConfig(train=str(prepared)), "train")
    assert isinstance(images, PreparedImages) and len(images) == len(reference)
    assert torch.equal(images.hr(17), reference.hr(17)) and images.name(17) == reference.name(17)


def test_streaming_a_prepared_source_is_refused(prepared):
    from srtrain.data import open_stream

    with pytest.raises(DataError, match="prepared, memory-mapped dataset.*--data.streaming=false"):
        open_stream(DataConfig(train=str(prepared), streaming=True))


def test_the_default_photographs_can_be_prepared(tmp_path):
    """`default` is a source like any other here too: its training photographs, cut into tiles, no network."""
    manifest = prepare("default", tmp_path / "p", tile=96, stride=96)
    assert manifest["settings"]["images"] == len(DEFAULT_TRAIN)
    assert len(load_images(DataConfig(train=str(tmp_path / "p")), "train")) == sum(
        e["tiles"] for e in manifest["shards"].values()
    )

"""The writer of prepared data sets (srtrain/data/prepare.py): exact tiles, MATLAB LR cut from the whole image,
resumable shard by shard, verified, refusing folders and settings it did not make."""

import json
import shutil

import pytest
import torch
from helpers import DATA, needs_data, read_rgb

from srtrain.config import DataConfig
from srtrain.data import DataError, PreparedImages, load_images
from srtrain.data.prepare import prepare, tile_starts
from srtrain.data.prepared import MANIFEST, verify_prepared
from srtrain.data.sources import DEFAULT_TRAIN
from srtrain.degradation import imresize, modcrop

pytestmark = needs_data


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
    """(The command's refusal of a folder it did not make: test_commands_prepare.py.)"""
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
    with pytest.raises(DataError, match="notes.txt' exists and was not made by srtrain prepare"):
        prepare(str(DATA / "Set5"), foreign / "notes.txt")  # a file, not a folder
    with pytest.raises(DataError, match="multiples of every scale"):
        prepare(str(DATA / "Set5"), tmp_path / "new", tile=100, stride=50, scales=(3,))


def test_the_default_photographs_can_be_prepared(tmp_path):
    """`default` is a source like any other here too: its training photographs, cut into tiles, no network."""
    manifest = prepare("default", tmp_path / "p", tile=96, stride=96)
    assert manifest["settings"]["images"] == len(DEFAULT_TRAIN)
    assert len(load_images(DataConfig(train=str(tmp_path / "p")), "train")) == sum(
        e["tiles"] for e in manifest["shards"].values()
    )

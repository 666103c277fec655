"""Training patches and validation images (srtrain/data/patches.py): aligned LR/HR pairs, the batched degradation,
samples that depend only on (seed, epoch, index), and the split of an epoch across processes, for real: 2 CPU
processes with gloo, as on a cluster.

Over an epoch the ranks must see disjoint samples that together cover the training set, whether accelerate
splits a map-style dataset or `split_dataset_by_node` a streamed one; a sample must be the same patch
whoever draws it; and ranks holding unequal shares of a stream must still take the same number of steps.
"""

import json

import datasets
import PIL.Image
import pytest
import torch
from helpers import DATA, launch, needs_data, paired_parquet, python
from torch.utils.data import DataLoader

from srtrain.config import DataConfig
from srtrain.data import DataError, StreamPatches, TrainPatches, ValImages, load_images, training_pair
from srtrain.degradation import imresize

pytestmark = needs_data


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("paired", [False, True])
def test_training_patches_are_aligned(tmp_path, scale, paired):
    source = paired_parquet(tmp_path, scale) if paired else DATA / "Set5"
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


def test_streamed_files_are_numbered_across_files_then_split(tmp_path):
    """Several Parquet files: a sample's number must not depend on which file or rank reads it."""
    features = datasets.Features({"hr": datasets.Image()})
    files = sorted((DATA / "Set5").glob("*.png"))
    for part, chunk in enumerate((files[:3], files[3:])):
        table = datasets.Dataset.from_dict({"hr": [str(f) for f in chunk]}, features=features)
        table.to_parquet(str(tmp_path / f"part{part}.parquet"))
    cfg = DataConfig(train=str(tmp_path), repeat=2)
    seen = []
    for rank in (0, 1):
        stream = StreamPatches(cfg, 4, 32, seed=1, fix="", rank=rank, world_size=2)
        stream.set_epoch(3)
        seen.append({patch["index"]: patch for patch in stream})
    # Parquet files record no split sizes (until a map-style load has cached them): no epoch length.
    with pytest.raises(DataError, match="does not record how many images it holds.*--data.streaming=false"):
        len(stream)
    whole = TrainPatches(load_images(cfg, "train"), 4, 32, repeat=2, seed=1)
    whole.set_epoch(3)
    assert not seen[0].keys() & seen[1].keys()
    assert sorted(seen[0] | seen[1]) == list(range(len(whole)))
    for index, patch in (seen[0] | seen[1]).items():
        assert patch.keys() == whole[index].keys() == {"hr", "index"} and torch.equal(patch["hr"], whole[index]["hr"])


def test_bad_streamed_images_are_named_as_by_the_map_style_check(tmp_path):
    (tmp_path / "good.png").write_bytes((DATA / "Set5" / "bird.png").read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png.*replace or remove it"):
        list(StreamPatches(DataConfig(train=str(tmp_path), repeat=1), 4, 64, 0, "fix", rank=0, world_size=1))
    small = StreamPatches(DataConfig(train=str(DATA / "Set14"), repeat=1), 4, 256, 0, "lower --patch_size", 0, 1)
    with pytest.raises(DataError, match=r"'comic.png'.*250x361, smaller than 256 px; lower --patch_size"):
        list(small)


IMAGES = 8  # 8 images x repeat 2 = 16 patches: 2 full batches of 4 per rank, 1 per loader worker
CASES = {
    "map": {"data.streaming": False},
    "stream": {"data.streaming": True},
    "stream_workers": {"data.streaming": True, "data.num_workers": 2},
    "stream_uneven": {"data.streaming": True, "data.repeat": 4, "uneven": True},  # 5 images: ranks get 3 and 2
}
# One epoch of each case through srtrain's own loader; each rank writes a checksum of every patch it drew.
SCRIPT = """
import json, sys, zlib
from pathlib import Path
from accelerate import Accelerator
from srtrain.launch import close_process_group, end_process
from srtrain.config import load_config
from srtrain.data import training_pair
from srtrain.train import make_train_loader

even, uneven, out, cases = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
accelerator = Accelerator(cpu=True)
seen = {}
for case, overrides in cases.items():
    folder = uneven if overrides.pop("uneven", False) else even
    base = {"data.train": folder, "scale": 4, "patch_size": 32, "batch_size": 4, "data.repeat": 2}
    loader = make_train_loader(load_config(overrides={**base, **overrides}), accelerator)
    loader.dataset.set_epoch(1)
    loader.set_epoch(1)
    batches = [training_pair(batch, 4) for batch in loader]
    patches = {
        int(i): zlib.crc32(lr.numpy().tobytes() + hr.numpy().tobytes())
        for batch in batches
        for i, lr, hr in zip(batch["index"], batch["lr"], batch["hr"])
    }
    seen[case] = {"batches": len(batches), "len": len(loader), "patches": patches}
(out / f"rank{accelerator.process_index}.json").write_text(json.dumps(seen))
if close_process_group():  # 2 processes: end as srtrain's commands do, past gloo's threads (docs/faults.md)
    end_process(0)
"""


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict[int, list[dict]]:
    """What each rank drew with 1 and with 2 processes: {processes: [rank 0's cases, rank 1's cases]}."""
    root = tmp_path_factory.mktemp("distributed")
    even, uneven = root / "even", root / "uneven"
    even.mkdir()
    uneven.mkdir()
    files = sorted((DATA / "Set5").glob("*.png")) + sorted((DATA / "Set14").glob("*.png"))[:3]
    for i, path in enumerate(files[:IMAGES]):
        crop = PIL.Image.open(path).convert("RGB").crop((0, 0, 64, 64))
        crop.save(even / path.name)
        if i < 5:
            crop.save(uneven / path.name)
    script = root / "draw.py"
    script.write_text(SCRIPT)
    seen = {}
    for processes in (1, 2):
        out = root / f"p{processes}"
        out.mkdir()
        args = [str(script), str(even), str(uneven), str(out), json.dumps(CASES)]
        if processes == 2:
            launch(args, root, 2, ACCELERATE_USE_CPU="1")
        else:
            python(args, root, ACCELERATE_USE_CPU="1")
        seen[processes] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("case", ["map", "stream", "stream_workers"])
def test_ranks_split_the_epoch_exactly(ranks, case):
    (alone,) = ranks[1]
    reference = alone["map"]["patches"]  # one process, map-style: every sample once
    assert sorted(map(int, reference)) == list(range(IMAGES * 2))
    rank0, rank1 = (r[case]["patches"] for r in ranks[2])
    assert len(rank0) == len(rank1) == IMAGES  # 2 batches of 4 each
    assert not rank0.keys() & rank1.keys()
    # Together: every sample, each the very patch one process draws (also when streamed in one process).
    assert {**rank0, **rank1} == reference
    assert alone[case]["patches"] == reference


@pytest.mark.slow
def test_ranks_with_unequal_stream_shares_take_the_same_steps(ranks):
    rank0, rank1 = (r["stream_uneven"] for r in ranks[2])
    # 5 images x 4 patches: 12 and 8 patches, so 3 and 2 batches of 4 unless cut to the smaller share
    assert rank0["batches"] == rank1["batches"] == rank0["len"] == rank1["len"] == 2
    assert not rank0["patches"].keys() & rank1["patches"].keys()
    (alone,) = ranks[1]
    assert alone["stream_uneven"]["batches"] == 5
    assert {**rank0["patches"], **rank1["patches"]}.items() <= alone["stream_uneven"]["patches"].items()

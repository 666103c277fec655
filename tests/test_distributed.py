"""Training data across processes, for real: 2 CPU processes with gloo, as on a cluster.

Over an epoch the ranks must see disjoint samples that together cover the training set, whether accelerate
splits a map-style dataset or `split_dataset_by_node` a streamed one; a sample must be the same patch
whoever draws it; and ranks holding unequal shares of a stream must still take the same number of steps.
"""

import json
import os
import subprocess
import sys

import datasets
import PIL.Image
import pytest
import torch
from conftest import DATA, ROOT, accelerate_launch, needs_data

from srtrain.config import DataConfig
from srtrain.data import DataError, StreamPatches, TrainPatches, load_images

pytestmark = needs_data
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


def run(script, args: list[str], processes: int) -> None:
    command = [*accelerate_launch(2), str(script)] if processes == 2 else [sys.executable, str(script)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


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
        run(script, [str(even), str(uneven), str(out), json.dumps(CASES)], processes)
        seen[processes] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return seen


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


def test_ranks_with_unequal_stream_shares_take_the_same_steps(ranks):
    rank0, rank1 = (r["stream_uneven"] for r in ranks[2])
    # 5 images x 4 patches: 12 and 8 patches, so 3 and 2 batches of 4 unless cut to the smaller share
    assert rank0["batches"] == rank1["batches"] == rank0["len"] == rank1["len"] == 2
    assert not rank0["patches"].keys() & rank1["patches"].keys()
    (alone,) = ranks[1]
    assert alone["stream_uneven"]["batches"] == 5
    assert {**rank0["patches"], **rank1["patches"]}.items() <= alone["stream_uneven"]["patches"].items()


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

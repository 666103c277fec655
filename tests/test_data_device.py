"""`data.on_device` (srtrain/data/device.py): batches cut by one gather where the images are held must be the host
path's (`TrainPatches` through accelerate's loader) bit for bit: the same uint8 patches, the same order, the same
float pair after `training_pair`, after a mid-epoch skip too; and a real training with it resumes exactly.

On CPU the images are held in memory; the CUDA tests (GPU memory, and the pinned-memory fallback) are skipped without
a GPU. Their data are crops of the photographs bundled with scikit-image, so that they run where ../shared is absent.
"""

import signal
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import DATA, needs_data, srtrain
from safetensors.torch import load_file

from srtrain.config import ConfigError, DataConfig, load_config
from srtrain.data import load_images, training_pair
from srtrain.data.device import cut_patches, holding_device, pack_images
from srtrain.data.patches import random_patch
from srtrain.data.prepare import prepare
from srtrain.launch import make_accelerator
from srtrain.train import epoch_batches, make_train_loader

SCALES = (2, 3, 4)
# (width, height) of crops of 5 bundled photographs, none a multiple of every scale: offsets, widths and the
# modcrop remainder all matter
CROPS = [(101, 77), (64, 90), (120, 120), (49, 53), (88, 61)]
PATCH, BATCH, REPEAT = 24, 4, 3  # a folder: 5 images x 3 = 15 samples, 3 batches of 4 (a prepared set has more tiles)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Per case and scale, the `data.*` overrides: an HR folder, HR/LR folder pairs, a prepared set with and without
    its stored LR tiles."""
    root = tmp_path_factory.mktemp("device")
    bundled = load_images(DataConfig(), "train")
    folders = {key: root / key for key in ("hr", *(f"lr_x{s}" for s in SCALES))}
    for folder in folders.values():
        folder.mkdir()

    def save(pixels: torch.Tensor, key: str, i: int) -> None:
        PIL.Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folders[key] / f"{bundled.name(i)}.png")

    for i, (width, height) in enumerate(CROPS):
        photo = bundled.hr(i)
        save(photo[:, 5 : 5 + height, 3 : 3 + width], "hr", i)
        for s in SCALES:  # LR of other content than HR (transposed): a patch cut from the wrong place shows
            save(photo.transpose(1, 2)[:, : height // s, : width // s], f"lr_x{s}", i)
    hr = folders["hr"]
    prepare(str(hr), root / "prepared", tile=48, stride=36, scales=SCALES)
    return {
        "folder": {s: {"data.train": str(hr)} for s in SCALES},
        "pairs": {s: {"data.train": f"{hr},{root / f'lr_x{s}'}"} for s in SCALES},
        "prepared": {s: {"data.train": str(root / "prepared")} for s in SCALES},
        "prepared_lr": {s: {"data.train": str(root / "prepared"), "data.lr_column": f"lr_x{s}"} for s in SCALES},
    }


@pytest.fixture(scope="module")
def accelerator():
    return make_accelerator()


def batches(accelerator, overrides: dict, on_device: bool, epoch: int, skip: int = 0) -> list[dict]:
    """One epoch's batches (after the first `skip`) of srtrain's own training loader, as `train_loop` reads them."""
    base = {"patch_size": PATCH, "batch_size": BATCH, "data.repeat": REPEAT, "data.on_device": on_device}
    loader = make_train_loader(load_config(overrides={**base, **overrides}), accelerator)
    return list(epoch_batches(loader, epoch, skip))


def assert_same_batches(host: list[dict], device: list[dict], scale: int) -> None:
    assert len(host) == len(device) > 0
    for a, b in zip(host, device, strict=True):
        assert a.keys() == b.keys()
        assert a["hr"].dtype == b["hr"].dtype == torch.uint8 and a["hr"].shape == (BATCH, 3, PATCH, PATCH)
        for key in a:
            assert torch.equal(a[key], b[key]), key
        pair_a, pair_b = training_pair(a, scale), training_pair(b, scale)
        assert torch.equal(pair_a["lr"], pair_b["lr"]) and torch.equal(pair_a["hr"], pair_b["hr"])


@pytest.mark.parametrize("case", ["folder", "pairs", "prepared", "prepared_lr"])
@pytest.mark.parametrize("scale", SCALES)
def test_device_batches_are_the_host_paths_bit_for_bit(sources, accelerator, case, scale):
    overrides = {**sources[case][scale], "scale": scale}
    for seed, epoch in ((0, 1), (11, 4)):
        overrides["seed"] = seed
        host = batches(accelerator, overrides, False, epoch)
        device = batches(accelerator, overrides, True, epoch)
        assert_same_batches(host, device, scale)
        assert ("lr" in device[0]) == (case in ("pairs", "prepared_lr"))
        skipped = batches(accelerator, overrides, True, epoch, skip=2)  # a resume 2 batches into the epoch
        assert_same_batches(host[2:], skipped, scale)
    assert not torch.equal(host[0]["hr"], batches(accelerator, overrides, True, epoch + 1)[0]["hr"])


def test_every_flip_and_rotation_is_random_patchs():
    """All 8 turns at the corners and inside of two images of different sizes, in one gather, against
    `random_patch` (scale 1: its draw decodes to exactly these positions and flips)."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in ((37, 53), (64, 40))]
    images, size = pack_images(arrays, pin=False), 16
    cases, wanted = [], []
    for which, array in enumerate(arrays):
        positions_y, positions_x = array.shape[1] - size + 1, array.shape[2] - size + 1
        for flips in range(8):
            for y, x in ((0, 0), (positions_y - 1, positions_x - 1), (3, 7)):
                draw = y + positions_y * (x + positions_x * flips)
                wanted.append(random_patch(array, None, 1, size, draw)[1])
                cases.append((which, y, x, flips))
    which, y, x, flips = np.array(cases).T
    assert torch.equal(cut_patches(images, which, y, x, flips, size), torch.stack(wanted))


def test_where_the_images_are_held(monkeypatch):
    """On CPU in memory; on a GPU there while they take at most half its free memory, else pinned host memory (the
    decision with `torch.cuda.mem_get_info` stubbed: no GPU here)."""
    assert holding_device(10, torch.device("cpu"))[0] == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1000, 4000))
    held, note = holding_device(500, torch.device("cuda", 0))
    assert held == torch.device("cuda", 0) and "GPU memory" in note
    held, note = holding_device(501, torch.device("cuda", 0))
    assert held == torch.device("cpu") and "pinned host memory" in note


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [({"data.streaming": True}, "--data.streaming=false"), ({"data.num_workers": 2}, "--data.num_workers=0")],
)
def test_on_device_refuses_streams_and_loader_workers(overrides, fix):
    with pytest.raises(ConfigError, match=fix):
        load_config(overrides={"data.on_device": True, **overrides})


@needs_data
def test_a_device_run_killed_mid_epoch_resumes_to_the_host_runs_weights(tmp_path):
    """2 epochs of 4 steps, a checkpoint every step, cosine LR. Killed in step 3 (it resumes 2 batches into epoch 1)
    and in step 6 (1 batch into epoch 2), the `data.on_device` run ends with the same weights, bit for bit, as the
    host path's straight run: the same batches, skipped at a resume by the same `epoch_batches`."""
    train = tmp_path / "hr"
    train.mkdir()
    for name in ("baby", "bird", "head", "woman"):
        PIL.Image.open(DATA / "Set5" / f"{name}.png").convert("RGB").crop((0, 0, 120, 104)).save(train / f"{name}.png")

    def job(out: Path, *extra: str) -> list[str]:
        return [
            f"--data.train={train}",
            f"--data.val={DATA / 'Set5'}",
            "--data.max_val_images=1",
            "--data.repeat=8",
            "--batch_size=8",
            "--patch_size=48",
            "--lr=0.002",
            "--epochs=2",
            "--scheduler=cosine",
            "--min_lr=0.0001",
            "--checkpoint_every=1",
            "--num_samples=0",
            f"--output_dir={out}",
            *extra,
        ]

    host, device = tmp_path / "host", tmp_path / "device"
    proc = srtrain(job(host), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i, fault in enumerate(("kill:step:3", "kill:step:6")):
        resume = ["--resume=auto"] if i else []
        proc = srtrain(job(device, "--data.on_device=true", *resume), tmp_path, fault, "disabled")
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr[-3000:])
    proc = srtrain(job(device, "--data.on_device=true", "--resume=auto"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data.on_device:" in proc.stdout and "held in memory on cpu" in proc.stdout
    assert "resuming at step 5 (epoch 2, batch 1)" in proc.stdout
    a, b = (load_file(str(out / "checkpoints" / "last" / "model.safetensors")) for out in (host, device))
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("share", [0.5, 0.0], ids=["gpu-memory", "pinned-fallback"])
@pytest.mark.parametrize("case", ["folder", "pairs", "prepared_lr"])
def test_on_cuda_device_batches_are_the_host_paths(sources, accelerator, case, share, monkeypatch):
    """On a GPU, with the images in GPU memory and (no GPU memory to spare) in pinned host memory: the batches reach
    the GPU equal to the host path's, and say where they were cut."""
    monkeypatch.setattr("srtrain.data.device.GPU_SHARE", share)
    overrides = {**sources[case][4], "scale": 4}
    host = batches(accelerator, overrides, False, 1)
    device = batches(accelerator, overrides, True, 1)
    assert all(value.is_cuda for batch in device for value in batch.values())
    assert_same_batches(host, device, 4)

"""srtrain/evaluation.py: scores as the SR literature computes them (the published bicubic tables to 0.02 dB),
gray images, folder pairs with MATLAB's own LR images, and tiled inference equal to the whole image."""

import pytest
import torch
from accelerate import Accelerator
from helpers import DATA, needs_data

from srtrain.config import DataConfig
from srtrain.data import ValImages, load_images
from srtrain.evaluation import evaluate_source, super_resolve
from srtrain.models import build_model

pytestmark = needs_data

# ../shared/data/README.md: published bicubic PSNR-Y / SSIM-Y (Set14 with its gray image used directly).
PUBLISHED = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


@pytest.mark.parametrize(("dataset", "scale"), sorted(PUBLISHED))
def test_bicubic_matches_published_tables(dataset, scale, accelerator):
    data = DataConfig(val=str(DATA / dataset), gray="direct")
    result = evaluate_source(build_model("bicubic", scale), data, scale, accelerator)
    psnr, ssim = PUBLISHED[dataset, scale]
    assert result["n_images"] == (5 if dataset == "Set5" else 14)
    assert abs(result["psnr_y"] - psnr) <= 0.02, result["psnr_y"]
    assert abs(result["ssim_y"] - ssim) <= 0.001, result["ssim_y"]


def test_gray_convention_changes_only_gray_images(accelerator):
    direct, replicate = (
        evaluate_source(build_model("bicubic", 3), DataConfig(val=str(DATA / "Set14"), gray=g), 3, accelerator)
        for g in ("direct", "replicate")
    )
    for a, b in zip(direct["per_image"], replicate["per_image"], strict=True):
        assert a["name"] == b["name"]
        assert (a["psnr_y"] != b["psnr_y"]) == (a["name"] == "bridge.png")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_folder_pair_with_matlab_lr_equals_lr_made_on_the_fly(scale, accelerator):
    pair = f"{DATA / 'Set5'},{DATA / 'matlab_lr' / 'Set5' / f'x{scale}'}"
    made = evaluate_source(build_model("bicubic", scale), DataConfig(val=str(DATA / "Set5")), scale, accelerator)
    given = evaluate_source(build_model("bicubic", scale), DataConfig(val=pair), scale, accelerator)
    assert given["dataset"] == "Set5"
    assert [p["psnr_y"] for p in given["per_image"]] == [p["psnr_y"] for p in made["per_image"]]


@pytest.mark.parametrize("name", ["espcn", "srcnn"])
def test_tiled_inference_equals_whole_image(name):
    torch.manual_seed(0)
    model = build_model(name, 3).eval()
    lr = ValImages(load_images(DataConfig(val=str(DATA / "Set14")), "val"), 3)[0]["lr"][None]  # baboon
    with torch.no_grad():
        whole = super_resolve(model, lr, 3)
        tiled = super_resolve(model, lr, 3, tile=48, overlap=12)
        seams = super_resolve(model, lr, 3, tile=48, overlap=0)
    assert (tiled - whole).abs().max() < 1e-5
    assert (seams - whole).abs().max() > 1e-3  # without context the tile borders differ: the check has teeth

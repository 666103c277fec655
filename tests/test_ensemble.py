"""srtrain/ensemble.py, the x8 self-ensemble, on real images: the 8 transforms are D4 and invert exactly, a model
that is itself symmetric (MATLAB bicubic) comes out unchanged, an official model comes out better, and a model
that scales its axes differently is refused by name."""

import pytest
import torch
from helpers import DATA, needs_data

from srtrain.config import DataConfig
from srtrain.data import ValImages, load_images
from srtrain.ensemble import TRANSFORMS, ensemble_forward, invert, transform
from srtrain.evaluation import super_resolve
from srtrain.metrics import psnr_y
from srtrain.models import build_model
from srtrain.models.weights import load_model_weights

pytestmark = needs_data


def set5(name: str, scale: int) -> dict[str, torch.Tensor]:
    """One Set5 image as evaluation sees it: LR by MATLAB bicubic in [0, 1] and HR (uint8), batched."""
    images = load_images(DataConfig(val=str(DATA / "Set5")), "val")
    pair = ValImages(images, scale)[[images.name(i) for i in range(len(images))].index(f"{name}.png")]
    return {"lr": pair["lr"][None], "hr": pair["hr"][None]}


def test_the_8_transforms_are_the_dihedral_group_and_invert_exactly():
    lr = set5("bird", 2)["lr"][..., :40, :56]  # not square: a quarter turn changes the shape
    turned = [transform(lr, mirror, turns) for mirror, turns in TRANSFORMS]
    assert len({(t.shape, t.numpy().tobytes()) for t in turned}) == 8  # 8 distinct images: all of D4, none twice
    assert {t.shape[-2:] for t in turned} == {(40, 56), (56, 40)}
    for t, (mirror, turns) in zip(turned, TRANSFORMS, strict=True):
        assert torch.equal(invert(t, mirror, turns), lr), (mirror, turns)


def test_a_symmetric_model_is_unchanged_by_the_ensemble():
    """MATLAB bicubic treats every flip and quarter turn alike, so its 8 outputs agree: the mean is its output."""
    lr = set5("butterfly", 3)["lr"][..., :50, :70]
    bicubic = build_model("bicubic", 3)
    plain, mean = bicubic(lr), ensemble_forward(bicubic, lr)
    assert mean.dtype == torch.float32 and mean.shape == plain.shape == (1, 3, 150, 210)
    assert (mean - plain).abs().max() < 1e-6


def test_the_ensemble_of_the_official_carn_m_is_better_than_its_plain_output():
    """A model trained on flips and turns errs differently in each orientation: the mean is a better image."""
    model = build_model("carn", 4, mobile=True).eval()
    load_model_weights(model, DATA.parent / "weights" / "carn_m.pth")
    pair = set5("bird", 4)
    with torch.no_grad():
        plain, mean = (super_resolve(model, pair["lr"], 4, ensemble=e) for e in (False, True))
    assert (mean - plain).abs().max() > 4 / 255
    assert psnr_y(mean, pair["hr"], 4).item() > psnr_y(plain, pair["hr"], 4).item() + 0.05


def test_a_model_that_scales_height_and_width_differently_is_refused_by_name():
    lr = set5("bird", 2)["lr"][..., :20, :30]
    wrong = r"Upsample's output .* turned 1 quarter turn.* comes back as \(1, 3, 60, 60\), not \(1, 3, 40, 90\)"
    with pytest.raises(ValueError, match=wrong + ".*scales height and width alike: run it without --ensemble"):
        ensemble_forward(torch.nn.Upsample(scale_factor=(2, 3)), lr)

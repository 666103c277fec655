"""srtrain/losses.py: the Charbonnier loss against a hand computation and on a real image, its gradient at zero
error, the names the configuration accepts, and a short training with it."""

import math

import PIL.Image
import pytest
import torch
import yaml
from helpers import DATA, metrics, needs_data, srtrain, tiny_job
from torchvision.transforms.functional import pil_to_tensor

from srtrain.config import ConfigError, load_config
from srtrain.losses import CHARBONNIER_EPS, LOSSES, charbonnier


def test_charbonnier_matches_a_hand_computation():
    hr = torch.tensor([0.5, 0.2, 0.9])
    sr = torch.tensor([0.5, 0.203, 0.4])  # errors 0, 3 eps, 0.5
    # sqrt(0 + 1e-6) = 1e-3; sqrt(9e-6 + 1e-6) = sqrt(1e-5); sqrt(0.25 + 1e-6)
    expected = (1e-3 + 0.0031622776601683794 + 0.5000009999990000) / 3
    assert charbonnier(sr, hr).item() == pytest.approx(expected, rel=1e-6)
    assert CHARBONNIER_EPS == 1e-3


@needs_data
def test_charbonnier_on_a_real_image_lies_between_l1_and_l1_plus_eps():
    hr = pil_to_tensor(PIL.Image.open(DATA / "Set5" / "butterfly.png").convert("RGB"))[None].double() / 255
    sr = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(hr, 4), scale_factor=4, mode="bicubic")
    diff = (sr - hr).flatten().tolist()
    expected = sum(math.sqrt(d * d + 1e-6) for d in diff) / len(diff)  # the formula, one pixel at a time
    assert charbonnier(sr, hr).item() == pytest.approx(expected, rel=1e-12)
    l1 = torch.nn.functional.l1_loss(sr, hr).item()
    assert l1 < charbonnier(sr, hr).item() < l1 + CHARBONNIER_EPS


def test_charbonnier_gradient_is_finite_and_zero_at_zero_error():
    hr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sr = hr.clone().requires_grad_()
    loss = charbonnier(sr, hr)
    loss.backward()
    assert loss.item() == pytest.approx(CHARBONNIER_EPS)
    assert torch.isfinite(sr.grad).all() and not sr.grad.any()
    sr.grad = None
    charbonnier(sr, hr + 1e-9).backward()  # an error far below eps: a small, smooth pull, never L1's jump to 1/N
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().max() < 1e-5 / sr.numel()


def test_the_configuration_accepts_exactly_the_registered_losses():
    assert set(LOSSES) == {"l1", "mse", "charbonnier"}
    for name in LOSSES:
        assert load_config(overrides={"loss": name}).loss == name
    with pytest.raises(ConfigError, match="'loss' expects one of 'l1', 'mse', 'charbonnier', got 'huber'"):
        load_config(overrides={"loss": "huber"})


@needs_data
@pytest.mark.slow
def test_a_training_with_charbonnier_runs_and_validates_with_it(photo_folder, tmp_path):
    out = tmp_path / "run"
    proc = srtrain(tiny_job(photo_folder, out, "--epochs=1", "--loss=charbonnier"), tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert yaml.safe_load((out / "config.yaml").read_text())["loss"] == "charbonnier"
    (row,) = metrics(out)
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])

"""srtrain.metrics against an independent numpy/scipy reference, skimage, and the published bicubic tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import correlate2d
from skimage.metrics import structural_similarity

from srtrain.degradation import imresize, modcrop
from srtrain.metrics import psnr_rgb, psnr_y, quantize, rgb_to_y, shave, ssim_y

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data (the SR benchmark images) is absent")

# Published bicubic rows (PSNR dB / SSIM on Y); Set14 scored its gray bridge.png directly.
PUBLISHED_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}
CROPS = ((slice(40, 77), slice(100, 153)), (slice(301, 338), slice(7, 60)))  # two odd 37x53 crops


def load_png(path: Path) -> torch.Tensor:
    """A PNG as a uint8 (C, H, W) tensor; 8-bit gray (mode L) gives C = 1."""
    pixels = np.array(Image.open(path))
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def bicubic_pair(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(SR, HR) as (1, C, H, W) floats in [0, 1]: the protocol's bicubic baseline on a uint8 HR image."""
    hr = modcrop(hr, scale)
    lr = imresize(hr, 1 / scale)
    return imresize(lr.float() / 255, scale)[None], (hr.double() / 255)[None]


# Independent reference: numpy on (H, W, C) arrays, one image at a time, 2-D window, scipy filtering.
def np_quantize(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x, 0.0, 1.0) * 255 + 0.5)


def np_y(x255: np.ndarray, gray: str) -> np.ndarray:
    if x255.shape[-1] == 1:
        if gray == "direct":
            return x255[..., 0]
        x255 = np.repeat(x255, 3, axis=-1)
    return 16 + (65.481 * x255[..., 0] + 128.553 * x255[..., 1] + 24.966 * x255[..., 2]) / 255


def np_scored_y(x: np.ndarray, border: int, gray: str) -> np.ndarray:
    y = np_y(np_quantize(x), gray)
    return y[border : y.shape[0] - border, border : y.shape[1] - border]


def np_psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    return 10 * math.log10(peak**2 / np.mean((a - b) ** 2))


def np_ssim(a: np.ndarray, b: np.ndarray) -> float:
    offsets = np.arange(11) - 5.0
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()

    def filt(z: np.ndarray) -> np.ndarray:
        return correlate2d(z, window, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def to_hwc(x: torch.Tensor) -> np.ndarray:
    return x.double().permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def baby_crops() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 37x53 RGB crops of Set5 baby's x4 bicubic baseline and of its HR, as (2, 3, 37, 53)."""
    sr, hr = bicubic_pair(load_png(DATA / "Set5" / "baby.png"), 4)
    return torch.cat([sr[..., r, c] for r, c in CROPS]), torch.cat([hr[..., r, c] for r, c in CROPS])


@pytest.fixture(scope="module")
def bridge_crops() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 37x53 crops of Set14's gray bridge x3 bicubic baseline and of its HR, as (2, 1, 37, 53)."""
    sr, hr = bicubic_pair(load_png(DATA / "Set14" / "bridge.png"), 3)
    return torch.cat([sr[..., r, c] for r, c in CROPS]), torch.cat([hr[..., r, c] for r, c in CROPS])


@needs_data
def test_rgb_metrics_match_numpy_reference(baby_crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = baby_crops
    assert sr.min() < 0 or sr.max() > 1, "the crops should exercise clamping"
    psnr, ssim, rgb = psnr_y(sr, hr, 4), ssim_y(sr, hr, 4), psnr_rgb(sr, hr)
    for values in (psnr, ssim, rgb):
        assert values.shape == (2,) and values.dtype == torch.float64
    for i in range(2):
        a, b = to_hwc(sr[i]), to_hwc(hr[i])
        ya, yb = np_scored_y(a, 4, "replicate"), np_scored_y(b, 4, "replicate")
        assert psnr[i].item() == pytest.approx(np_psnr(ya, yb, 255), abs=1e-6)
        assert ssim[i].item() == pytest.approx(np_ssim(ya, yb), abs=1e-6)
        expected_rgb = np_psnr(np_quantize(a) / 255, np_quantize(b) / 255, 1)
        assert rgb[i].item() == pytest.approx(expected_rgb, abs=1e-6)


@needs_data
def test_full_image_matches_numpy_reference() -> None:
    sr, hr = bicubic_pair(load_png(DATA / "Set5" / "bird.png"), 3)
    ya, yb = (np_scored_y(to_hwc(x[0]), 3, "replicate") for x in (sr, hr))
    assert psnr_y(sr, hr, 3).item() == pytest.approx(np_psnr(ya, yb, 255), abs=1e-6)
    assert ssim_y(sr, hr, 3).item() == pytest.approx(np_ssim(ya, yb), abs=1e-6)


@needs_data
def test_gray_conventions(bridge_crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = bridge_crops
    results = {}
    for gray in ("direct", "replicate"):
        psnr, ssim = psnr_y(sr, hr, 3, gray=gray), ssim_y(sr, hr, 3, gray=gray)
        for i in range(2):
            ya, yb = np_scored_y(to_hwc(sr[i]), 3, gray), np_scored_y(to_hwc(hr[i]), 3, gray)
            assert psnr[i].item() == pytest.approx(np_psnr(ya, yb, 255), abs=1e-6)
            assert ssim[i].item() == pytest.approx(np_ssim(ya, yb), abs=1e-6)
        results[gray] = psnr, ssim
    # Replicating maps gray g to Y = 16 + 219 g / 255, shrinking every error by 219/255.
    gap = results["replicate"][0] - results["direct"][0]
    assert torch.allclose(gap, torch.full_like(gap, 20 * math.log10(255 / 219)), rtol=0, atol=1e-9)
    assert not torch.allclose(results["replicate"][1], results["direct"][1])


@needs_data
def test_ssim_matches_skimage_interior(baby_crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    # skimage pads instead of filtering 'valid'; its map's interior (5 px in) is the valid map.
    sr, hr = baby_crops
    ours = ssim_y(sr, hr, 4)
    for i in range(2):
        ya, yb = np_scored_y(to_hwc(sr[i]), 4, "replicate"), np_scored_y(to_hwc(hr[i]), 4, "replicate")
        _, ssim_map = structural_similarity(
            ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, full=True
        )
        assert ours[i].item() == pytest.approx(ssim_map[5:-5, 5:-5].mean(), abs=1e-9)


def test_identical_images() -> None:
    for channels in (1, 3):
        x = torch.rand(2, channels, 20, 24, generator=torch.Generator().manual_seed(channels))
        assert torch.isinf(psnr_y(x, x.clone(), 2)).all()
        assert torch.isinf(psnr_rgb(x, x.clone())).all()
        assert torch.equal(ssim_y(x, x.clone(), 2), torch.ones(2, dtype=torch.float64))


def test_quantize_clamps_and_rounds() -> None:
    x = torch.tensor([-0.3, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.7])
    assert torch.equal(quantize(x), torch.tensor([0.0, 0.0, 0.0, 1.0, 255.0, 255.0], dtype=torch.float64))


def test_rgb_to_y_range_and_gray_modes() -> None:
    white = torch.full((1, 3, 2, 2), 255.0)
    assert torch.allclose(rgb_to_y(white), torch.tensor(235.0, dtype=torch.float64))
    assert torch.allclose(rgb_to_y(torch.zeros(1, 3, 2, 2)), torch.tensor(16.0, dtype=torch.float64))
    gray = torch.full((1, 1, 2, 2), 255.0)
    assert torch.allclose(rgb_to_y(gray), torch.tensor(235.0, dtype=torch.float64))
    assert torch.equal(rgb_to_y(gray, gray="direct"), gray.double())
    with pytest.raises(ValueError, match="gray"):
        rgb_to_y(gray, gray="average")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        rgb_to_y(torch.zeros(1, 2, 2, 2))


def test_shave() -> None:
    x = torch.rand(2, 3, 20, 24)
    assert shave(x, 3).shape == (2, 3, 14, 18)
    assert torch.equal(shave(x, 3), x[..., 3:17, 3:21])
    assert torch.equal(shave(x, 0), x)


def test_rejects_mismatched_or_tiny_inputs() -> None:
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="one shape"):
        psnr_y(x, x[..., :19], 2)
    with pytest.raises(ValueError, match="one shape"):
        psnr_rgb(x[0], x[0])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_y(x, x, 5)


@needs_data
@pytest.mark.parametrize(("image_set", "scale"), sorted(PUBLISHED_BICUBIC))
def test_published_bicubic_baselines(image_set: str, scale: int) -> None:
    """The protocol end to end: MATLAB LR, float bicubic upscale, quantize, Y, shave, mean over the set."""
    gray = "direct" if image_set == "Set14" else "replicate"
    psnrs, ssims = [], []
    for path in sorted((DATA / image_set).glob("*.png")):
        sr, hr = bicubic_pair(load_png(path), scale)
        psnrs.append(psnr_y(sr, hr, scale, gray=gray).item())
        ssims.append(ssim_y(sr, hr, scale, gray=gray).item())
    psnr, ssim = PUBLISHED_BICUBIC[image_set, scale]
    assert np.mean(psnrs) == pytest.approx(psnr, abs=0.02)
    assert np.mean(ssims) == pytest.approx(ssim, abs=0.001)

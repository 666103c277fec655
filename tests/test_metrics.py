"""srtrain.metrics against an independent numpy/scipy reference, skimage, piq, and the published bicubic tables."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import DATA, load_png, needs_data
from scipy.ndimage import gaussian_filter
from scipy.signal import convolve2d, correlate2d
from skimage.metrics import mean_squared_error, normalized_root_mse, structural_similarity

import srtrain.metrics as metrics
from srtrain.degradation import imresize, modcrop
from srtrain.metrics import fsim, mse, nrmse, psnr_rgb, psnr_y, quantize, rgb_to_y, shave, ssim_rgb, ssim_y

# Published bicubic rows (PSNR dB / SSIM on Y); Set14 scored its gray bridge.png directly.
CROPS = ((slice(40, 77), slice(100, 153)), (slice(301, 338), slice(7, 60)))  # two odd 37x53 crops


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
        assert ssim[i].item() == pytest.approx(np_ssim(ya, yb), abs=1e-12)
        expected_rgb = np_psnr(np_quantize(a) / 255, np_quantize(b) / 255, 1)
        assert rgb[i].item() == pytest.approx(expected_rgb, abs=1e-6)


@needs_data
def test_full_image_matches_numpy_reference() -> None:
    sr, hr = bicubic_pair(load_png(DATA / "Set5" / "bird.png"), 3)
    ya, yb = (np_scored_y(to_hwc(x[0]), 3, "replicate") for x in (sr, hr))
    assert psnr_y(sr, hr, 3).item() == pytest.approx(np_psnr(ya, yb, 255), abs=1e-6)
    assert ssim_y(sr, hr, 3).item() == pytest.approx(np_ssim(ya, yb), abs=1e-12)


@needs_data
def test_gray_conventions(bridge_crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = bridge_crops
    results = {}
    for gray in ("direct", "replicate"):
        psnr, ssim = psnr_y(sr, hr, 3, gray=gray), ssim_y(sr, hr, 3, gray=gray)
        for i in range(2):
            ya, yb = np_scored_y(to_hwc(sr[i]), 3, gray), np_scored_y(to_hwc(hr[i]), 3, gray)
            assert psnr[i].item() == pytest.approx(np_psnr(ya, yb, 255), abs=1e-6)
            assert ssim[i].item() == pytest.approx(np_ssim(ya, yb), abs=1e-12)
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
    x64 = x.double()
    quantize(x64)  # works in place on its own copy: the caller's float64 tensor is left as it was
    assert torch.equal(x64, x.double())


def test_uint8_images_are_scored_on_their_levels() -> None:
    """Validation hands HR over as uint8: every score of it equals the score of the same image as floats."""
    torch.manual_seed(0)
    hr = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8)
    sr = (hr.float() / 255 + torch.randn(hr.shape) * 0.05).clamp(0, 1)
    assert torch.equal(quantize(hr), hr.double())
    as_float = hr.float() / 255
    for score in (psnr_y, ssim_y):
        assert torch.equal(score(sr, hr, 4), score(sr, as_float, 4))
    assert torch.equal(psnr_rgb(sr, hr), psnr_rgb(sr, as_float))


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
def test_ssim_rgb_matches_skimage_interior(baby_crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = baby_crops
    ours = ssim_rgb(sr, hr, 4)
    assert ours.shape == (2,) and ours.dtype == torch.float64
    for i in range(2):
        a, b = (np_quantize(to_hwc(x[i]))[4:-4, 4:-4] for x in (sr, hr))
        _, ssim_map = structural_similarity(
            a,
            b,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            full=True,
        )
        assert ours[i].item() == pytest.approx(ssim_map[5:-5, 5:-5].mean(), abs=1e-9)


@needs_data
def test_ssim_rgb_of_gray_is_ssim_of_the_levels(bridge_crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = bridge_crops
    assert torch.allclose(ssim_rgb(sr, hr, 3), ssim_y(sr, hr, 3, gray="direct"), rtol=0, atol=1e-12)


@needs_data
@pytest.mark.parametrize("crops", ["baby_crops", "bridge_crops"])
def test_mse_and_nrmse_match_skimage(crops: str, request: pytest.FixtureRequest) -> None:
    sr, hr = request.getfixturevalue(crops)
    errors, normalized = mse(sr, hr), nrmse(sr, hr)
    for values in (errors, normalized):
        assert values.shape == (2,) and values.dtype == torch.float64
    for i in range(2):
        a, b = np_quantize(to_hwc(sr[i])), np_quantize(to_hwc(hr[i]))
        assert errors[i].item() == pytest.approx(mean_squared_error(b / 255, a / 255), abs=1e-12)
        assert normalized[i].item() == pytest.approx(normalized_root_mse(b, a), abs=1e-12)
    assert torch.allclose(psnr_rgb(sr, hr), 10 * torch.log10(1 / errors), rtol=0, atol=1e-9)


def test_new_metrics_of_identical_images() -> None:
    for channels in (1, 3):
        x = torch.rand(2, channels, 40, 56, generator=torch.Generator().manual_seed(channels))
        zeros, ones = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
        assert torch.equal(mse(x, x.clone()), zeros)
        assert torch.equal(nrmse(x, x.clone()), zeros)
        assert torch.equal(ssim_rgb(x, x.clone(), 2), ones)
        for chromatic in (True, False):
            assert torch.equal(fsim(x, x.clone(), chromatic), ones)


# FSIM: FeatureSIM.m's MATLAB conventions, checked one by one against numpy transcriptions of the MATLAB code.
def matlab_conv2_same(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB's ``conv2(a, kernel, 'same')``: the full convolution from row/column floor(size / 2) on, which
    differs from scipy's 'same' for even kernel sizes."""
    full = convolve2d(a, kernel, mode="full")
    top, left = kernel.shape[0] // 2, kernel.shape[1] // 2
    return full[top : top + a.shape[0], left : left + a.shape[1]]


def test_matlab_conv2_same_reference() -> None:
    # MATLAB's documentation example: conv(u, v, 'same') with a 4-tap v.
    u, v = np.array([[-1, 2, 3, -2, 0, 1, 2]]), np.array([[2, 4, -1, 1]])
    assert matlab_conv2_same(u, v).tolist() == [[15, 5, -9, 7, 6, 7, -1]]


@pytest.mark.parametrize("size", [(37, 53), (40, 52)])
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_fsim_downsampling_is_featuresim_m(size: tuple[int, int], factor: int) -> None:
    # aveY = conv2(Y, fspecial('average', F), 'same'); Y = aveY(1:F:rows, 1:F:cols)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(factor), dtype=torch.float64) * 255
    ours = metrics._fsim_downsample(x, factor)
    box = np.full((factor, factor), 1 / factor**2)
    for n, c in np.ndindex(2, 3):
        expected = matlab_conv2_same(x[n, c].numpy(), box)[::factor, ::factor]
        assert ours[n, c].shape == expected.shape
        np.testing.assert_allclose(ours[n, c].numpy(), expected, rtol=0, atol=1e-10)


def test_fsim_factor_rounds_like_matlab() -> None:
    # F = max(1, round(min(rows, cols) / 256)); MATLAB rounds halves away from zero.
    cases = {(37, 53): 1, (383, 900): 1, (900, 384): 2, (639, 700): 2, (640, 700): 3, (1152, 1200): 5}
    for (rows, cols), factor in cases.items():
        assert metrics._fsim_factor(rows, cols) == factor


def test_fsim_matlab_helpers() -> None:
    generator = torch.Generator().manual_seed(0)
    for n in (9, 10):  # MATLAB's median averages the two middle values of an even count
        x = torch.rand(3, n, generator=generator, dtype=torch.float64)
        np.testing.assert_array_equal(metrics._median(x).numpy(), np.median(x.numpy(), axis=-1))
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)  # real(x .^ 0.03), complex for negative x
    expected = np.real(np.power(x.numpy().astype(complex), 0.03))
    np.testing.assert_allclose(metrics._real_power(x, 0.03).numpy(), expected, rtol=1e-14, atol=0)
    for rows, cols in ((6, 9), (7, 8)):  # [x, y] = meshgrid(xrange, yrange): x runs along the columns

        def matlab_range(n: int) -> np.ndarray:
            return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1) if n % 2 else np.arange(-n / 2, n / 2) / n

        x_grid, y_grid = np.meshgrid(matlab_range(cols), matlab_range(rows))
        ours_x, ours_y = metrics._frequency_grid(rows, cols)
        np.testing.assert_array_equal(ours_x.expand(rows, cols).numpy(), x_grid)
        np.testing.assert_array_equal(ours_y.expand(rows, cols).numpy(), y_grid)
    y = torch.rand(2, 1, 12, 15, generator=generator, dtype=torch.float64) * 255
    dx = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16
    for n in range(2):
        gx, gy = matlab_conv2_same(y[n, 0].numpy(), dx), matlab_conv2_same(y[n, 0].numpy(), dx.T)
        expected = np.sqrt(gx**2 + gy**2)
        np.testing.assert_allclose(metrics._gradient_magnitude(y)[n, 0].numpy(), expected, rtol=0, atol=1e-12)


# piq's fsim follows FeatureSIM.m except for these choices. Substituting them into srtrain's fsim makes it agree
# with piq to rounding, so they are all the differences there are (the filters, phase congruency, noise model,
# gradients and pooling agree), and FeatureSIM.m is what srtrain follows in each.
_OUR_FREQUENCY_GRID = metrics._frequency_grid
PIQ_CHOICES = {
    # rgb2yiq: the 4-digit NTSC rows for I and Q, not FeatureSIM.m's 3-digit ones (FSIMc only, ~1e-6).
    "_YIQ": ((0.299, 0.587, 0.114), (0.5959, -0.2746, -0.3213), (0.2115, -0.5227, 0.3112)),
    # avg_pool2d(x, F): F x F blocks from the corner, a partial last block dropped, instead of conv2 'same'
    # (zero padded, offset) sampled at 1:F:end; differs for F >= 3 or a side not a multiple of F (1e-3 to 1e-2).
    "_fsim_downsample": lambda x, factor: F.avg_pool2d(x, factor),
    # Python's round(2.5) = 2 where MATLAB's gives 3 (min side 640, 1152, ...; ~3e-2).
    "_fsim_factor": lambda rows, cols: max(1, round(min(rows, cols) / 256)),
    # |S_I S_Q| ** lambda instead of real((S_I S_Q) .^ lambda): differs where opposite chroma makes the
    # product negative (FSIMc only, ~2e-5).
    "_real_power": lambda x, exponent: x.abs() ** exponent,
    # torch.median's lower middle value instead of MATLAB's mean of the two (~3e-7).
    "_median": lambda x: x.median(dim=-1).values,
    # Machine epsilon instead of phasecong2's epsilon = 1e-4 in XEnergy (~2e-7); piq also adds it to both sums
    # of the final ratio, which moves nothing at 1e-12.
    "_PC_EPSILON": torch.finfo(torch.float64).eps,
    # get_meshgrid(indexing='ij') calls the row coordinate x, mirroring theta about the diagonal: the same four
    # orientations, three point-reflected, which conjugates their responses and so changes phase congruency
    # only through the unpaired Nyquist row/column of even sizes (~1e-6).
    "_frequency_grid": lambda rows, cols: _OUR_FREQUENCY_GRID(rows, cols)[::-1],
}


@contextlib.contextmanager
def piq_choices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as patch:
        for name, value in PIQ_CHOICES.items():
            patch.setattr(metrics, name, value)
        metrics._log_gabor_bank.cache_clear()  # the filter bank depends on the grid
        try:
            yield
        finally:
            metrics._log_gabor_bank.cache_clear()


@pytest.fixture(scope="module")
def fsim_pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor, bool]]:
    """Named (SR, HR, same_downsampling): bicubic baselines of odd and even sizes with F = 1, 2, 3, gray and RGB.

    ``same_downsampling``: piq's block averaging and rounding happen to give FeatureSIM.m's samples.
    """
    baby_sr, baby_hr = bicubic_pair(load_png(DATA / "Set5" / "baby.png"), 4)
    crops = torch.cat([baby_sr[..., r, c] for r, c in CROPS]), torch.cat([baby_hr[..., r, c] for r, c in CROPS])
    big_sr, big_hr = bicubic_pair(imresize(load_png(DATA / "Set14" / "comic.png"), 3), 4)
    return {
        "baby crops 37x53 F=1": (*crops, True),
        "pepper 512x512 F=2": (*bicubic_pair(load_png(DATA / "Set14" / "pepper.png"), 4), True),
        "bridge gray 512x512 F=2": (*bicubic_pair(load_png(DATA / "Set14" / "bridge.png"), 4), True),
        "zebra 390x585 F=2 odd": (*bicubic_pair(load_png(DATA / "Set14" / "zebra.png"), 3), False),
        "comic x3 660x700 F=3": (big_sr[..., :660, :700], big_hr[..., :660, :700], False),
        "comic x3 640x700 F=round(2.5)": (big_sr[..., :640, :700], big_hr[..., :640, :700], False),
    }


@needs_data
@pytest.mark.parametrize(
    "case",
    [
        "baby crops 37x53 F=1",
        "pepper 512x512 F=2",
        "bridge gray 512x512 F=2",
        "zebra 390x585 F=2 odd",
        "comic x3 660x700 F=3",
        "comic x3 640x700 F=round(2.5)",
    ],
)
def test_fsim_matches_piq_but_for_its_deviations(
    case: str, fsim_pairs: dict[str, tuple[torch.Tensor, torch.Tensor, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    piq = pytest.importorskip("piq")
    sr, hr, same_downsampling = fsim_pairs[case]
    for chromatic in (True, False) if sr.shape[1] == 3 else (False,):
        expected = piq.fsim(
            quantize(sr) / 255, quantize(hr) / 255, data_range=1.0, chromatic=chromatic, reduction="none"
        )
        ours = fsim(sr, hr, chromatic)
        assert ours.shape == (sr.shape[0],) and ours.dtype == torch.float64
        gap = (ours - expected).abs().max().item()
        if same_downsampling:
            # Only the small choices remain: up to 2.0e-5 with chroma and 4.2e-6 without over Set5 and Set14 x4.
            assert gap < (5e-5 if chromatic else 1e-5)
        else:
            assert gap > 1e-4, "FeatureSIM.m's downsampling should differ from piq's here"
        with piq_choices(monkeypatch):
            assert torch.allclose(fsim(sr, hr, chromatic), expected, rtol=0, atol=1e-12)


@needs_data
def test_fsim_of_identical_images_is_one(fsim_pairs: dict[str, tuple[torch.Tensor, torch.Tensor, bool]]) -> None:
    for case in ("baby crops 37x53 F=1", "bridge gray 512x512 F=2", "zebra 390x585 F=2 odd"):
        hr = fsim_pairs[case][1]
        for chromatic in (True, False):
            assert torch.equal(fsim(hr, hr.clone(), chromatic), torch.ones(hr.shape[0], dtype=torch.float64))
    assert torch.isnan(fsim(torch.full((1, 3, 20, 20), 0.5), torch.full((1, 3, 20, 20), 0.5))).all()


@needs_data
def test_fsim_decreases_with_blur() -> None:
    hr = (load_png(DATA / "Set5" / "butterfly.png").double() / 255)[None]
    sigmas = (0.5, 1.0, 1.5, 2.0, 3.0)
    blurred = torch.cat([torch.from_numpy(gaussian_filter(hr.numpy(), (0, 0, s, s))) for s in sigmas])
    scores = {chromatic: fsim(blurred, hr.expand_as(blurred), chromatic) for chromatic in (True, False)}
    for values in scores.values():
        assert (values < 1).all() and (values.diff() < 0).all(), values
    one_by_one = torch.cat([fsim(b[None], hr) for b in blurred[::2]])  # a batch scores as its images alone
    assert torch.allclose(scores[True][::2], one_by_one, rtol=0, atol=1e-12)


def test_fsim_rejects_bad_inputs() -> None:
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="one shape"):
        fsim(x, x[..., :19])
    with pytest.raises(ValueError, match="channels"):
        fsim(x[:, :2], x[:, :2])


@needs_data
@pytest.mark.parametrize("strip_pixels", [1, 3000, metrics.SSIM_STRIP_PIXELS])
def test_ssim_by_strips_matches_numpy_reference(strip_pixels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """SSIM is summed strip by strip of rows. On bird's 282x282 shaved Y (a 272-row map): one-row strips, strips
    of 10 rows (the last of 2) and the whole map in one strip all give the reference's float64 figure."""
    monkeypatch.setattr(metrics, "SSIM_STRIP_PIXELS", strip_pixels)
    sr, hr = bicubic_pair(load_png(DATA / "Set5" / "bird.png"), 3)
    ya, yb = (np_scored_y(to_hwc(x[0]), 3, "replicate") for x in (sr, hr))
    assert ssim_y(sr, hr, 3).item() == pytest.approx(np_ssim(ya, yb), abs=1e-12)

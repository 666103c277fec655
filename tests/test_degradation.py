"""srtrain.degradation: MATLAB-exact bicubic resize, checked against LR images MATLAB itself produced."""

from __future__ import annotations

import pytest
import torch
from helpers import DATA, load_png, needs_data

from srtrain import degradation
from srtrain.degradation import imresize, modcrop

SET_SIZES = {"Set5": 5, "Set14": 14}
# A row of cubic weights sums to 1 and, for integer up- and downscaling factors, its negative taps sum
# to at least -0.125, so its L1 norm (the worst-case gain on an error in its input) is at most 1.25.
MAX_ROW_L1 = 1.25


def matlab_round(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's double-to-uint8 cast, for reference values computed here."""
    return torch.floor(x.clamp(0, 255) + 0.5)


@pytest.fixture(scope="module")
def baby() -> torch.Tensor:
    return load_png(DATA / "Set5" / "baby.png")


@needs_data
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("image_set", sorted(SET_SIZES))
def test_reproduces_matlab_lr_bit_for_bit(image_set: str, scale: int) -> None:
    lr_dir = DATA / "matlab_lr" / image_set / f"x{scale}"
    names = sorted(path.name for path in lr_dir.glob("*.png"))
    assert len(names) == SET_SIZES[image_set]
    mismatches = {}
    for name in names:
        expected = load_png(lr_dir / name)
        got = imresize(modcrop(load_png(DATA / image_set / name), scale), 1 / scale)
        assert got.dtype == torch.uint8
        assert got.shape == expected.shape, name
        differing = int((got != expected).sum())
        if differing:
            mismatches[name] = differing
    assert not mismatches, f"pixels differing from MATLAB per image: {mismatches}"


def test_modcrop_drops_bottom_right() -> None:
    x = torch.arange(3 * 37 * 53).view(3, 37, 53)
    cropped = modcrop(x, 4)
    assert cropped.shape == (3, 36, 52)
    assert torch.equal(cropped, x[:, :36, :52])
    assert modcrop(x[None], 1).shape == (1, 3, 37, 53)


@needs_data
@pytest.mark.parametrize("size", [(512, 256), (512, 171), (512, 128), (512, 1024), (512, 1536), (512, 2048)])
def test_uint8_single_axis_is_rounded_float(baby: torch.Tensor, size: tuple[int, int]) -> None:
    # One axis means one rounding: the uint8 path must be exactly the float64 path, clamped and rounded.
    got = imresize(baby, size=size)
    expected = matlab_round(imresize(baby.double(), size=size))
    assert torch.equal(got.double(), expected)


@needs_data
@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4])
def test_uint8_and_float_paths_agree(baby: torch.Tensor, scale: float) -> None:
    # Levels 40..215 keep both passes' overshoot inside 0..255, so no clamping and only rounding differs:
    # the first pass rounds by <= 0.5, which the second pass amplifies by at most MAX_ROW_L1, and the
    # final rounding adds <= 0.5.
    image = modcrop(baby, 12)[:, :96, :120]
    image = (40 + image.double() * (175 / 255)).round().to(torch.uint8)
    rounded = imresize(image, scale).double()
    exact = imresize(image.double(), scale)
    assert exact.min() > 0 and exact.max() < 255
    assert (rounded - exact).abs().max() <= 0.5 + 0.5 * MAX_ROW_L1


@needs_data
@pytest.mark.parametrize("scale", [1 / 3, 4])
def test_float32_matches_float64(baby: torch.Tensor, scale: float) -> None:
    image = baby[:, :120, :144].double() / 255
    single = imresize(image.float(), scale)
    assert single.dtype == torch.float32
    assert torch.allclose(single.double(), imresize(image, scale), rtol=0, atol=1e-5)


@needs_data
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_batched_equals_per_image(baby: torch.Tensor, dtype: torch.dtype) -> None:
    crops = torch.stack([baby[:, :48, :60], baby[:, 100:148, 200:260], baby[:, -48:, -60:]]).to(dtype)
    for scale in (1 / 3, 2):
        batched = imresize(crops, scale)
        for crop, out in zip(crops, batched, strict=True):
            assert torch.allclose(imresize(crop, scale).double(), out.double(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upscale_shape_and_constant_image(scale: int) -> None:
    for value, dtype in ((0.37, torch.float32), (0.37, torch.float64), (123, torch.uint8)):
        x = torch.full((2, 3, 9, 13), value, dtype=dtype)
        out = imresize(x, scale)
        assert out.shape == (2, 3, 9 * scale, 13 * scale)
        assert out.dtype == dtype
        assert torch.allclose(out.double(), x.double().mean().expand(out.shape), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("scale", "expected"), [(1 / 2, (19, 27)), (1 / 3, (13, 18)), (0.3, (12, 16))])
def test_downscale_size_is_ceil(scale: float, expected: tuple[int, int]) -> None:
    assert imresize(torch.rand(1, 37, 53), scale).shape == (1, *expected)


def test_size_argument() -> None:
    x = (torch.rand(3, 37, 53) * 255).round().to(torch.uint8)
    assert imresize(x, size=(20, 80)).shape == (3, 20, 80)
    assert torch.equal(imresize(x, size=(74, 106)), imresize(x, 2))
    constant = torch.full((1, 37, 53), 0.25, dtype=torch.float64)
    assert torch.allclose(imresize(constant, size=(11, 90)), torch.tensor(0.25, dtype=torch.float64))


def test_smaller_scale_axis_goes_first() -> None:
    # MATLAB resizes the axis with the smaller scale first; with uint8 rounding in between, order shows.
    x = (torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    w_first = imresize(imresize(x, size=(40, 13)), size=(70, 13))
    h_first = imresize(imresize(x, size=(70, 40)), size=(70, 13))
    assert torch.equal(imresize(x, size=(70, 13)), w_first)
    assert not torch.equal(w_first, h_first)


def test_rejects_bad_arguments() -> None:
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x, 2, size=(16, 16))
    with pytest.raises(ValueError, match="positive"):
        imresize(x, -2)
    with pytest.raises(TypeError, match="uint8 or floating"):
        imresize(x.to(torch.int16), 2)


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_whole_factor_downscale_by_taps_matches_the_weight_matrix(factor: int, antialias: bool) -> None:
    # A downscale by a whole factor sums its taps as strided views (degradation._downscale_axis); it must equal
    # MATLAB's contributions applied as the dense matrix, edges (clamped taps) included, up to float64 rounding.
    x = torch.rand(2, 3, 5 * factor, 7 * factor, dtype=torch.float64, generator=torch.Generator().manual_seed(factor))
    expected = x
    for axis in (-2, -1):
        matrix = degradation._weight_matrix(
            x.shape[axis], x.shape[axis] // factor, 1 / factor, antialias, x.device, x.dtype
        )
        expected = matrix @ expected if axis == -2 else expected @ matrix.T
    got = x
    for axis in (-2, -1):  # called directly: imresize takes this path only for one image of 512 px and more
        got = degradation._downscale_axis(got, axis, factor, antialias, torch.float64)
    assert torch.allclose(got, expected, rtol=0, atol=1e-13)
    levels = (x * 255).round().to(torch.uint8)  # uint8 in: computed in float64 without a converted copy first
    as_float = degradation._downscale_axis(levels.double(), -2, factor, antialias, torch.float64)
    assert torch.equal(degradation._downscale_axis(levels, -2, factor, antialias, torch.float64), as_float)
    assert torch.allclose(imresize(x, size=(5, 7), antialias=antialias), got, rtol=0, atol=1e-13)

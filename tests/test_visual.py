"""Sample grids and crop comparisons: labelled panels, a crop where the detail is, and zoomed crops that are
exactly the pixels of the images they come from."""

import numpy as np
import PIL.Image
import torch
from helpers import DATA, needs_data

from srtrain.config import DataConfig
from srtrain.data import ValImages, load_images
from srtrain.evaluation import super_resolve
from srtrain.models import build_model
from srtrain.visual import (
    GAP,
    LABEL_HEIGHT,
    crop_comparison,
    crop_size,
    detailed_crop,
    sample_grid,
    to_uint8,
    zoom,
)

pytestmark = needs_data


def test_detailed_crop_finds_the_texture_in_a_flat_image():
    hr = torch.full((3, 120, 160), 0.5)
    hr[:, 72:104, 104:136] = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))  # mean 0.5 too
    assert detailed_crop(hr, 32) == (72, 104, 32)


def test_sample_grid_labels_each_column_above_its_zoomed_crop():
    images = load_images(DataConfig(val=str(DATA / "Set5")), "val")
    sample = ValImages(images, 2)[0]  # baby, 512 x 512
    model = build_model("espcn", 2).eval()
    grid = sample_grid(model, sample, 2)
    side = 512
    assert grid.shape == (2 * (side + LABEL_HEIGHT) + GAP, 4 * side + 3 * GAP, 3)
    for column in range(4):
        x = column * (side + GAP)
        for y in (0, side + LABEL_HEIGHT + GAP):
            strip = grid[y : y + LABEL_HEIGHT, x : x + side]
            assert (strip < 128).any() and (strip == 255).mean() > 0.8  # dark text on a white strip
    box = detailed_crop(sample["hr"], 64)
    sr = to_uint8(super_resolve(model, sample["lr"][None], 2))
    crop_row = grid[2 * LABEL_HEIGHT + side + GAP :, 2 * (side + GAP) : 2 * (side + GAP) + side]
    assert np.array_equal(crop_row, zoom(sr, box, side))  # the SR column's crop is exactly SR's pixels, enlarged


def test_sample_grid_of_the_self_ensemble_shows_its_pixels():
    """With `ensemble` (validation's `val_ensemble`) the SR column is the ensemble's output, what validation scores."""
    images = load_images(DataConfig(val=str(DATA / "Set5")), "val")
    sample = ValImages(images, 2)[1]  # bird, 288 x 288
    torch.manual_seed(0)
    model = build_model("espcn", 2).eval()
    grid = sample_grid(model, sample, 2, ensemble=True)
    box, side = detailed_crop(sample["hr"], crop_size(sample["hr"])), 288
    crop_row = grid[2 * LABEL_HEIGHT + side + GAP :, 2 * (side + GAP) : 2 * (side + GAP) + side]
    ensemble, plain = (to_uint8(super_resolve(model, sample["lr"][None], 2, ensemble=e)) for e in (True, False))
    assert np.array_equal(crop_row, zoom(ensemble, box, side))
    assert not np.array_equal(crop_row, zoom(plain, box, side))


def test_crop_comparison_has_hr_then_each_method():
    hr = torch.from_numpy(np.asarray(PIL.Image.open(DATA / "Set5" / "bird.png").convert("RGB")).copy())
    hr = hr.permute(2, 0, 1)[None].float() / 255
    box = detailed_crop(hr[0], 40)
    out = crop_comparison(hr, [("noisy", (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)), ("same", hr)], box, 100)
    assert out.shape == (100 + LABEL_HEIGHT, 3 * 100 + 2 * GAP, 3)
    assert np.array_equal(out[LABEL_HEIGHT:, :100], out[LABEL_HEIGHT:, 2 * (100 + GAP) :])  # HR == "same"

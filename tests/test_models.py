"""The model registry and the models of the foundation: shapes, registration and a learning step."""

import pytest
import torch

from srtrain.models import available_models, build_model, model_options


@pytest.mark.parametrize("name", ["bicubic", "srcnn", "espcn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape(name, scale):
    model = build_model(name, scale)
    lr = torch.rand(2, 3, 13, 17)
    assert model(lr).shape == (2, 3, 13 * scale, 17 * scale)


def test_registry_lists_and_describes_models():
    assert {"bicubic", "srcnn", "espcn"} <= set(available_models())
    assert model_options("espcn") == {"channels": int, "mid_channels": int}
    assert model_options("bicubic") == {}
    with pytest.raises(ValueError, match="did you mean 'srcnn'"):
        build_model("srcn", 2)


def test_options_reach_the_model():
    narrow = build_model("espcn", 4, channels=8, mid_channels=4)
    assert narrow.body[0].out_channels == 8 and narrow.body[2].out_channels == 4


@pytest.mark.parametrize("name", ["srcnn", "espcn"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build_model(name, 2)
    hr = torch.rand(4, 3, 32, 32)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = torch.nn.functional.l1_loss(model(lr), hr)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = torch.nn.functional.l1_loss(model(lr), hr)
    assert after < before

"""The model zoo: every model at every scale, fp32 and bf16 autocast, a learning step, published sizes,
counted multiply-adds, and the ResNet-50 backbone's weights (never downloaded). Weight files in general:
test_models_weights.py."""

import pytest
import torch
from helpers import make_model
from safetensors.torch import save_file

from srtrain.models import available_models, build_model, model_options
from srtrain.models.espcn import Tanh
from srtrain.models.profile import multiply_adds, trainable_parameters
from srtrain.models.resnet50 import PretrainedWeightsError, cached_weights_path

ZOO = ["bicubic", "carn", "edsr", "espcn", "imdn", "rcan", "resnet50", "srcnn", "srresnet", "swinir"]
# Small variants keep the learning-step test fast; shapes and dtypes use the defaults.
SMALL = {"rcan": {"n_groups": 2, "n_blocks": 2}, "swinir": {"n_blocks": 1, "depth": 2}}


def test_registry_has_the_whole_zoo():
    assert available_models() == ZOO
    with pytest.raises(ValueError, match="did you mean 'srcnn'"):
        build_model("srcn", 2)


def test_espcn_tanh_is_torch_tanh_within_float32_rounding():
    """ESPCN's inference tanh (2 sigmoid(2x) - 1 on CPU) against torch.tanh: the whole range, the tails, the edges;
    with autograd on or in bfloat16 it is torch.tanh itself, and it never writes to its input."""
    torch.manual_seed(0)
    x = torch.cat(
        [torch.linspace(-20, 20, 400_001), 3 * torch.randn(100_000), torch.tensor([0.0, float("inf"), -float("inf")])]
    )
    before = x.clone()
    with torch.no_grad():
        fast = Tanh()(x)
    assert torch.equal(x, before)
    assert (fast - torch.tanh(x)).abs().max() <= 2e-7
    assert fast[-2:].tolist() == [1.0, -1.0] and Tanh()(torch.tensor([float("nan")])).isnan().all()
    exact = x.requires_grad_()
    assert torch.equal(Tanh()(exact), torch.tanh(exact))
    with torch.no_grad():
        low = x.bfloat16()
        assert torch.equal(Tanh()(low), torch.tanh(low))


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shapes_and_dtypes_fp32_and_bf16(name, scale):
    model = make_model(name, scale).eval()
    lr = torch.rand(2, 3, 13, 17)
    with torch.no_grad():
        out = model(lr)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(lr)
    assert out.shape == (2, 3, 13 * scale, 17 * scale) and out.dtype == torch.float32
    assert low.shape == out.shape and low.dtype in (torch.bfloat16, torch.float32)
    assert torch.isfinite(low.float()).all()


@pytest.mark.parametrize("name", [n for n in ZOO if n != "bicubic"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = make_model(name, 2, **SMALL.get(name, {})).train()
    hr = torch.rand(4, 3, 32, 32)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss():
        torch.manual_seed(1)  # the same stochastic-depth draws before and after the step
        return torch.nn.functional.l1_loss(model(lr).float(), hr)

    before = loss()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert loss() < before


# Published trainable parameter counts (millions): EDSR (Lim et al. 2017, Table 2 and the authors' code),
# RCAN (Zhang et al. 2018), SRResNet (Ledig et al. 2017), IMDN (Hui et al. 2019). SwinIR-light: the official
# code's count; the paper's table (0.878/0.886/0.897 M) leaves out the 60->60 conv after the body (32,460
# parameters), see docs/models.md.
PUBLISHED_MILLIONS = [
    ("edsr", 2, {}, 1.37),
    ("edsr", 3, {}, 1.55),
    ("edsr", 4, {}, 1.52),
    ("edsr", 4, {"n_blocks": 32, "channels": 256, "res_scale": 0.1}, 43.1),
    ("edsr", 2, {"n_blocks": 32, "channels": 256, "res_scale": 0.1}, 40.7),
    ("rcan", 2, {}, 15.4),
    ("rcan", 4, {}, 15.6),
    ("srresnet", 4, {}, 1.547),
    ("swinir", 2, {}, 0.910),
    ("swinir", 4, {}, 0.930),
    ("imdn", 2, {}, 0.694),
    ("imdn", 3, {}, 0.703),
    ("imdn", 4, {}, 0.715),
]


@pytest.mark.parametrize(("name", "scale", "options", "millions"), PUBLISHED_MILLIONS)
def test_parameter_counts_match_published(name, scale, options, millions):
    count = trainable_parameters(make_model(name, scale, **options))
    assert abs(count / 1e6 - millions) / millions < 0.01, count


def test_swinir_light_is_the_paper_count_plus_the_conv_after_body():
    assert trainable_parameters(make_model("swinir", 4)) - 32_460 == pytest.approx(897_000, rel=0.001)


def test_multiply_adds_are_counted():
    # ESPCN x4 per LR pixel: 5x5x3x64 + 3x3x64x32 + 3x3x32x48; 1280x720 output = 320x180 LR pixels.
    assert multiply_adds("espcn", 4) == (5 * 5 * 3 * 64 + 3 * 3 * 64 * 32 + 3 * 3 * 32 * 48) * 320 * 180
    assert multiply_adds("edsr", 4) / 1e9 == pytest.approx(114.2, abs=0.1)  # EDSR-baseline, as tables report
    assert multiply_adds("imdn", 4) / 1e9 == pytest.approx(40.9, abs=0.1)  # Hui et al. 2019, Table 3
    assert multiply_adds("carn", 4) / 1e9 == pytest.approx(90.9, abs=0.1)  # Ahn et al. 2018, Table 3


def test_resnet50_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(PretrainedWeightsError) as err:
        build_model("resnet50", 4)
    message = str(err.value)
    assert "--model.weights=PATH" in message and "--model.pretrained=false" in message
    assert str(tmp_path / "empty") in message and "https://download.pytorch.org/models/" in message


def test_resnet50_loads_a_local_file_or_the_hub_cache_without_network(tmp_path, monkeypatch):
    import torchvision

    state = torchvision.models.resnet50(weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r50.safetensors"))
    model = build_model("resnet50", 2, weights=str(tmp_path / "r50.safetensors"))
    assert torch.equal(model.encoder.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cached = cached_weights_path(torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    model = build_model("resnet50", 2)
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])
    assert "pretrained" in model_options("resnet50")

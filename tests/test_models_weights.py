"""Weight files (srtrain/models/weights.py): safetensors and torch files load strictly, mismatches are named, and
official weights of published models (../shared/weights) load as their authors saved them and reproduce the
published tables through `srtrain eval`: IMDN to 0.02 dB / 0.001, CARN-M to 0.2 dB (its authors say the paper's
figures cannot be reproduced exactly from the released file). `--init_from` a file of another scale fills all but
the upsampler and names it; anything else that does not fit is refused."""

import json
from pathlib import Path

import pytest
import torch
from helpers import DATA, last_weights, make_model, needs_data, srtrain, tiny_job
from safetensors.torch import save_file

from srtrain.cli import main
from srtrain.models import build_model
from srtrain.models.profile import trainable_parameters
from srtrain.models.weights import WeightsError, load_init_weights, load_model_weights, load_weights

WEIGHTS = DATA.parent / "weights"
needs_weights = pytest.mark.skipif(not WEIGHTS.exists(), reason="../shared/weights is absent")

# Hui et al. 2019, Table 3; Ahn et al. 2018, Table 3 (PSNR-Y / SSIM-Y; Set5, Set14).
IMDN = {
    4: {"Set5": (32.21, 0.8948), "Set14": (28.58, 0.7811)},
    3: {"Set5": (34.36, 0.9270), "Set14": (30.32, 0.8417)},
    2: {"Set5": (38.00, 0.9605), "Set14": (33.63, 0.9177)},
}
CARN_M = {
    4: {"Set5": (31.92, 0.8903), "Set14": (28.42, 0.7762)},
    3: {"Set5": (33.99, 0.9236), "Set14": (30.08, 0.8367)},
    2: {"Set5": (37.53, 0.9583), "Set14": (33.26, 0.9141)},
}


def eval_json(tmp_path: Path, *args: str) -> dict[str, dict]:
    out = tmp_path / "eval.json"
    sets = ["--data", str(DATA / "Set5"), "--data", str(DATA / "Set14")]
    assert main(["eval", *args, *sets, "--metrics", "psnr_y,ssim_y", "--json", str(out)]) == 0
    return {r["dataset"]: r for r in json.loads(out.read_text())["results"]}


@needs_data
@needs_weights
@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imdn_loads_strictly_and_reproduces_the_paper(scale, tmp_path):
    model = build_model("imdn", scale)
    load_model_weights(model, WEIGHTS / f"IMDN_x{scale}.pth")  # keys saved as `module.*` (DataParallel)
    assert trainable_parameters(model) == {2: 694_404, 3: 703_059, 4: 715_176}[scale]
    weights = ["--weights", str(WEIGHTS / f"IMDN_x{scale}.pth")]
    results = eval_json(tmp_path, "--model", "imdn", *weights, "--scale", str(scale))
    for dataset, (psnr, ssim) in IMDN[scale].items():
        assert abs(results[dataset]["psnr_y"] - psnr) <= 0.02, (dataset, results[dataset]["psnr_y"])
        assert abs(results[dataset]["ssim_y"] - ssim) <= 0.001, (dataset, results[dataset]["ssim_y"])


@needs_data
@needs_weights
@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_carn_m_fills_the_branch_of_its_scale_and_scores_near_the_paper(scale, tmp_path):
    file = WEIGHTS / "carn_m.pth"
    model = build_model("carn", scale, mobile=True)
    load_model_weights(model, file)
    state = load_weights(file)
    branch = f"upsample.up{scale}."
    assert {k for k in state if k.startswith(branch)} == {k for k in model.state_dict() if k.startswith(branch)}
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    results = eval_json(
        tmp_path, "--model", "carn", "--option", "mobile=true", "--weights", str(file), "--scale", str(scale)
    )
    for dataset, (psnr, ssim) in CARN_M[scale].items():
        assert abs(results[dataset]["psnr_y"] - psnr) <= 0.2, (dataset, results[dataset]["psnr_y"])
        assert abs(results[dataset]["ssim_y"] - ssim) <= 0.005, (dataset, results[dataset]["ssim_y"])


def test_weight_files_load_and_mismatches_list_keys(tmp_path):
    source = make_model("espcn", 2)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pth")
    for file in ("w.safetensors", "w.pth"):
        target = make_model("espcn", 2)
        load_model_weights(target, tmp_path / file)
        assert all(
            torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values(), strict=True)
        )
    with pytest.raises(WeightsError, match=r"missing keys \['body.0.body.0.bias'.*unexpected keys \['body.0.bias'"):
        load_model_weights(make_model("edsr", 2), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"body.0.weight: file \[64, 3, 5, 5\], model \[64, 3, 9, 9\]"):
        load_model_weights(make_model("srcnn", 2), tmp_path / "w.safetensors")  # same keys, other shapes
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickle.pth")  # an object, not weights
    with pytest.raises(WeightsError, match="weights-only"):
        load_model_weights(make_model("espcn", 2), tmp_path / "pickle.pth")


@needs_data
@needs_weights
def test_wrong_files_are_refused_with_the_fix(tmp_path):
    with pytest.raises(WeightsError, match="missing keys"):  # the multi-scale CARN-M file is not full CARN
        load_model_weights(build_model("carn", 4), WEIGHTS / "carn_m.pth")
    fix = r"upsampler.0.weight: file \[48, 64, 3, 3\], model \[12, 64, 3, 3\].*scale it was trained for \(--scale\)"
    with pytest.raises(WeightsError, match=fix):  # x4 weights into an x2 IMDN: same keys, other shapes
        load_model_weights(build_model("imdn", 2), WEIGHTS / "IMDN_x4.pth")
    whole = tmp_path / "whole_model.pth"
    torch.save(build_model("imdn", 4), whole)  # a pickled model object, as some repositories publish
    with pytest.raises(WeightsError, match=r"state_dict\(\)") as err:
        load_model_weights(build_model("imdn", 4), whole)
    assert str(whole) in str(err.value)


@needs_data
@needs_weights
def test_bad_model_option_names_the_valid_ones(capsys):
    args = ["eval", "--model", "carn", "--option", "tiny=true", "--data", str(DATA / "Set5"), "--scale", "4"]
    assert main(args) == 2
    assert "mobile" in capsys.readouterr().err


# Cross-scale fine-tuning (`--init_from` a file of another scale): everything but the upsampler loads.


def init_from(file: Path, name: str, scale: int, **options) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """The model after `load_init_weights`, a copy of it before (its fresh initialisation), and the printed line."""
    model = make_model(name, scale, **options)
    fresh = make_model(name, scale, **options)
    fresh.load_state_dict(model.state_dict())
    return model, fresh, load_init_weights(model, file, name, scale, options)


# EDSR's x4 upsampler is two x2 stages: the file's x2 stage (tail.0.0, the same shape) fills the first, as EDSR's
# own code does. ESPCN's one sub-pixel convolution has 3 x 4 x 4 outputs at x4, 3 x 2 x 2 at x2.
@pytest.mark.parametrize(
    ("name", "upsampler"),
    [("edsr", ["tail.0.2.weight", "tail.0.2.bias"]), ("espcn", ["body.4.weight", "body.4.bias"])],
)
def test_a_x2_file_fills_a_x4_model_but_its_upsampler_and_names_it(name, upsampler, tmp_path):
    x2 = make_model(name, 2).state_dict()
    save_file(x2, str(tmp_path / "x2.safetensors"))
    model, fresh, line = init_from(tmp_path / "x2.safetensors", name, 4)
    own = model.state_dict()
    assert line == f"init_from: {len(own) - len(upsampler)} tensors loaded, left fresh for x4: {', '.join(upsampler)}"
    for key, value in own.items():
        assert torch.equal(value, fresh.state_dict()[key] if key in upsampler else x2[key]), key


@needs_weights
def test_official_files_of_another_scale_fill_all_but_the_upsampler():
    model, fresh, line = init_from(WEIGHTS / "IMDN_x2.pth", "imdn", 4)
    assert line == "init_from: 90 tensors loaded, left fresh for x4: upsampler.0.weight, upsampler.0.bias"
    official = load_weights(WEIGHTS / "IMDN_x2.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key] if key.startswith("upsampler.") else official[key]), key
    model, _, line = init_from(WEIGHTS / "IMDN_x4.pth", "imdn", 4)  # the same scale: strict, nothing to say
    assert line == "" and torch.equal(
        model.state_dict()["upsampler.0.weight"], load_weights(WEIGHTS / "IMDN_x4.pth")["upsampler.0.weight"]
    )
    _, _, line = init_from(WEIGHTS / "carn_m.pth", "carn", 3, mobile=True)  # multi-scale: its x3 branch, strictly
    assert line == ""


def test_a_carn_file_of_one_scale_leaves_the_branch_of_another_fresh(tmp_path):
    save_file(make_model("carn", 2, mobile=True).state_dict(), str(tmp_path / "x2.safetensors"))
    _, _, line = init_from(tmp_path / "x2.safetensors", "carn", 4, mobile=True)
    branch = (
        "upsample.up4.body.0.weight, upsample.up4.body.0.bias, upsample.up4.body.3.weight, upsample.up4.body.3.bias"
    )
    assert line.endswith(f"left fresh for x4: {branch}")
    save_file(make_model("edsr", 4).state_dict(), str(tmp_path / "x4.safetensors"))  # x4 into x2: nothing fresh
    _, _, line = init_from(tmp_path / "x4.safetensors", "edsr", 2)
    assert line == "init_from: 72 tensors loaded; the file's tail.0.2.bias, tail.0.2.weight left out (not used at x2)"


def test_another_width_or_model_is_refused_naming_the_tensor_both_shapes_and_the_fix(tmp_path):
    save_file(make_model("edsr", 2, channels=32).state_dict(), str(tmp_path / "narrow_x2.safetensors"))
    width = r"head.weight: file \[32, 3, 3, 3\], model \[64, 3, 3, 3\]"
    fix = r"train the model and options the file was made with \(--model, --model.KEY=VALUE"
    with pytest.raises(WeightsError, match=rf"does not fit edsr x4, .*{width}.*{fix}"):
        init_from(tmp_path / "narrow_x2.safetensors", "edsr", 4)
    with pytest.raises(WeightsError, match=r"body.0.weight: not in the file, model \[64, 3, 5, 5\]"):
        init_from(tmp_path / "narrow_x2.safetensors", "espcn", 4)
    with pytest.raises(WeightsError, match=r"does not fit edsr x2, .*head.weight: file \[32, 3, 3, 3\]"):
        init_from(tmp_path / "narrow_x2.safetensors", "edsr", 2)  # the same scale: refused as before


@needs_data
@pytest.mark.slow
def test_training_at_x4_starts_from_a_x2_runs_checkpoint(photo_folder, tmp_path):
    x2, x4 = tmp_path / "x2", tmp_path / "x4"
    proc = srtrain(["train", *tiny_job(photo_folder, x2, "--epochs=1", "--scale=2")], tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = x2 / "checkpoints" / "last"
    # a learning rate so small that the x4 run's weights stay the x2 run's, to the 9th decimal
    args = tiny_job(photo_folder, x4, "--epochs=1", "--scale=4", f"--init_from={start}", "--lr=1e-12", "--min_lr=0")
    proc = srtrain(["train", *args], tmp_path, wandb="disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "init_from: 4 tensors loaded, left fresh for x4: body.4.weight, body.4.bias" in " ".join(proc.stdout.split())
    before, after = last_weights(x2), last_weights(x4)
    assert all(torch.allclose(before[k], after[k], atol=1e-9) for k in ("body.0.weight", "body.2.weight")), "not loaded"
    assert after["body.4.weight"].shape == (48, 32, 3, 3)

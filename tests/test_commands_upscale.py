"""`srtrain upscale` (srtrain/upscale.py) on real files: sizes, modes and formats kept, tiles equal the whole
image, no overwriting without --force, and a corrupt file among good ones is skipped by name with a failing exit
code."""

import re

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import DATA, needs_data
from safetensors.torch import save_file

from srtrain.cli import main
from srtrain.models import build_model
from srtrain.models.weights import load_model_weights
from srtrain.upscale import upscale_image

pytestmark = needs_data


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Fixed ESPCN x2 weights, so that separate runs use the same network."""
    path = tmp_path_factory.mktemp("w") / "espcn_x2.safetensors"
    save_file(build_model("espcn", 2).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Real photographs in four modes and two formats: RGB PNG, RGBA PNG, gray PNG, RGB JPEG."""
    folder = tmp_path_factory.mktemp("in")
    photo = PIL.Image.open(DATA / "Set5" / "butterfly.png").convert("RGB").crop((0, 0, 70, 54))
    photo.save(folder / "rgb.png")
    rgba = photo.copy()
    alpha = np.zeros((54, 70), np.uint8)
    alpha[:, 35:] = 255
    rgba.putalpha(PIL.Image.fromarray(alpha))
    rgba.save(folder / "rgba.png")
    photo.convert("L").save(folder / "gray.png")
    photo.save(folder / "photo.jpg", quality=90)
    return folder


def upscale(*args) -> int:
    return main(["upscale", *map(str, args)])


def test_round_trip_keeps_size_mode_and_format_and_tiles_equal_the_whole_image(inputs, weights, tmp_path):
    model = ["--model", "espcn", "--weights", weights, "--scale", "2"]
    assert upscale(inputs, "-o", tmp_path / "whole", *model, "--tile", "0") == 0
    assert upscale(inputs / "*.png", inputs / "photo.jpg", "-o", tmp_path / "tiled", *model, "--tile", "16") == 0
    for source in sorted(inputs.iterdir()):
        original = PIL.Image.open(source)
        whole, tiled = (
            PIL.Image.open(tmp_path / "whole" / source.name),
            PIL.Image.open(tmp_path / "tiled" / source.name),
        )
        assert whole.size == (2 * original.width, 2 * original.height)
        assert (whole.mode, whole.format) == (original.mode, original.format)
        assert np.array_equal(np.asarray(whole), np.asarray(tiled)), source.name
    alpha = np.asarray(PIL.Image.open(tmp_path / "whole" / "rgba.png"))[..., 3]
    assert (alpha[:, :60] == 0).all() and (alpha[:, 80:] == 255).all()  # alpha upscaled by bicubic, not the model
    rgb = np.asarray(PIL.Image.open(tmp_path / "whole" / "rgb.png"))
    assert np.array_equal(rgb[..., :3], np.asarray(PIL.Image.open(tmp_path / "whole" / "rgba.png"))[..., :3])


def test_published_carn_m_tiled_equals_whole_image(inputs, tmp_path):
    model = ["--model", "carn", "--option", "mobile=true", "--weights", DATA.parent / "weights" / "carn_m.pth"]
    assert upscale(inputs / "rgb.png", "-o", tmp_path / "whole", *model, "--scale", "4", "--tile", "0") == 0
    assert upscale(inputs / "rgb.png", "-o", tmp_path / "tiled", *model, "--scale", "4", "--tile", "20") == 0
    whole = np.asarray(PIL.Image.open(tmp_path / "whole" / "rgb.png"))
    assert whole.shape == (216, 280, 3)
    assert np.array_equal(whole, np.asarray(PIL.Image.open(tmp_path / "tiled" / "rgb.png")))


def test_ensemble_of_the_published_carn_m_tiled_equals_whole_image_and_differs_from_plain(inputs, tmp_path, capsys):
    model = ["--model", "carn", "--option", "mobile=true", "--weights", DATA.parent / "weights" / "carn_m.pth"]
    files = [inputs / "rgb.png", inputs / "gray.png"]
    assert upscale(*files, "-o", tmp_path / "whole", *model, "--scale", "2", "--tile", "0", "--ensemble") == 0
    assert re.search(
        r"2 of 2 image\(s\) upscaled x2 with the x8 self-ensemble into .* in \d+\.\d s", capsys.readouterr().out
    )
    assert upscale(*files, "-o", tmp_path / "tiled", *model, "--scale", "2", "--tile", "20", "--ensemble") == 0
    assert upscale(*files, "-o", tmp_path / "plain", *model, "--scale", "2", "--tile", "0") == 0
    for name in ("rgb.png", "gray.png"):
        whole, tiled, plain = (np.asarray(PIL.Image.open(tmp_path / out / name)) for out in ("whole", "tiled", "plain"))
        assert np.array_equal(whole, tiled), name
        assert whole.shape == plain.shape and np.abs(whole.astype(int) - plain).max() > 4, name


def test_refuses_to_overwrite_without_force(inputs, weights, tmp_path, capsys):
    model = ["--model", "espcn", "--weights", weights, "--scale", "2"]
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "rgb.png"
    mine.write_bytes(b"the user's own file")
    assert upscale(inputs / "rgb.png", inputs / "gray.png", "-o", out, *model) == 2
    err = capsys.readouterr().err
    assert "rgb.png" in err and "--force" in err
    assert mine.read_bytes() == b"the user's own file" and not (out / "gray.png").exists()  # nothing was done
    assert upscale(inputs / "rgb.png", "-o", out, *model, "--force") == 0
    assert PIL.Image.open(mine).size == (140, 108)


def test_a_corrupt_file_is_named_and_skipped_and_the_others_are_done(inputs, weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("rgb.png", "gray.png"):
        (folder / name).write_bytes((inputs / name).read_bytes())
    (folder / "broken.png").write_bytes((inputs / "rgb.png").read_bytes()[:400])  # truncated
    out = tmp_path / "out"
    assert upscale(folder, "-o", out, "--model", "espcn", "--weights", weights, "--scale", "2") == 1
    assert sorted(p.name for p in out.iterdir()) == ["gray.png", "rgb.png"]
    err = capsys.readouterr().err
    assert "1 failed" in err and "broken.png" in err


def test_unknown_input_and_scale_errors_are_clear(inputs, tmp_path, capsys):
    assert upscale(tmp_path / "nope.png", "-o", tmp_path / "out", "--model", "bicubic", "--scale", "2") == 2
    assert "nope.png" in capsys.readouterr().err
    assert upscale(inputs / "rgb.png", "-o", tmp_path / "out", "--model", "bicubic") == 2
    assert "--scale is required" in capsys.readouterr().err
    assert upscale(inputs / "rgb.png", "-o", inputs, "--model", "bicubic", "--scale", "2") == 2
    assert "holds the inputs themselves" in capsys.readouterr().err  # not "pass --force", which would overwrite them
    assert upscale(inputs / "rgb.png", "-o", inputs / "gray.png", "--model", "bicubic", "--scale", "2") == 2
    assert "gray.png is a file; -o names the folder" in " ".join(capsys.readouterr().err.split())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_output_is_close_to_cpu(inputs, tmp_path):
    model = ["--model", "carn", "--option", "mobile=true", "--weights", DATA.parent / "weights" / "carn_m.pth"]
    assert upscale(inputs / "rgb.png", "-o", tmp_path / "gpu", *model, "--scale", "4", "--bf16") == 0
    gpu = np.asarray(PIL.Image.open(tmp_path / "gpu" / "rgb.png")).astype(int)
    image = PIL.Image.open(inputs / "rgb.png")
    cpu_model = build_model("carn", 4, mobile=True)
    load_model_weights(cpu_model, DATA.parent / "weights" / "carn_m.pth")
    cpu = np.asarray(upscale_image(cpu_model, image, 4, 0, 0, torch.device("cpu"), precision="no")).astype(int)
    assert gpu.shape == cpu.shape and np.abs(gpu - cpu).mean() < 2

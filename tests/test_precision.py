"""srtrain/precision.py: one rule for every command's precision."""

import pytest
import torch

from srtrain.config import ConfigError
from srtrain.precision import autocast, checked_precision, launcher_disagrees


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is a GPU")
def test_fp16_is_refused_on_a_cpu_naming_the_alternative():
    with pytest.raises(ConfigError, match="fp16 needs a GPU; on CPU use --mixed_precision=bf16 or no"):
        checked_precision("fp16")


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ConfigError, match="choose one of no, bf16, fp16"):
        checked_precision("fp8")


def test_autocast_runs_inference_in_the_precision_asked_for():
    x, w = torch.rand(4, 4), torch.rand(4, 4)
    with autocast("no", torch.device("cpu")):
        assert (x @ w).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert (x @ w).dtype == torch.bfloat16


def test_the_launchers_precision_is_ignored_and_said_so_only_when_it_differs(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert "--mixed_precision=fp16 is ignored: the job's mixed_precision=bf16 decides" in launcher_disagrees("bf16")
    assert launcher_disagrees("fp16") == ""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert launcher_disagrees("bf16") == ""

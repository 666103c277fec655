"""The weight average (srtrain/ema.py, `ema`): its update, and a real training with it validated beside the trained
weights and scored by `srtrain eval` unless `--raw_weights`. That a resume restores it bit for bit, from inside an
epoch too, and two processes keep it identical, every stop, kill and resume test shows: their job
(`helpers.checkpointed_job`) keeps one, and `helpers.assert_identical` compares it."""

import pytest
import torch
from helpers import (
    eval_on_tiny_val,
    metrics,
    needs_data,
    srtrain,
    tiny_job,
)

from srtrain.ema import WeightAverage, decay_at
from srtrain.models import build_model


def test_the_decay_warms_up_to_the_configured_one():
    assert decay_at(0.999, 1) == pytest.approx(2 / 11) and decay_at(0.999, 100) == pytest.approx(101 / 110)
    assert decay_at(0.999, 10**6) == 0.999 and decay_at(0.5, 30) == 0.5


def test_an_update_moves_the_average_toward_the_weights_and_a_skipped_one_does_not():
    model = build_model("espcn", 2, channels=8)
    average = WeightAverage(model, 0.9)
    before = [p.clone() for p in average.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(1000, torch.tensor(1.0))  # skipped: the update was not applied
    assert all(torch.equal(a, b) for a, b in zip(average.model.parameters(), before, strict=True))
    average.update(1000, torch.tensor(0.0))
    for a, b, w in zip(average.model.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(a, b + 0.1 * (w - b))  # w_ema + (1 - 0.9)(w - w_ema)
    assert not any(p.requires_grad for p in average.model.parameters())


@needs_data
@pytest.mark.slow
def test_eval_scores_the_average_as_validation_did_and_the_trained_weights_on_request(photo_folder, tmp_path):
    """The metrics row's `psnr_y` is the average's, `raw_psnr_y` the trained weights'; `srtrain eval` of the best
    checkpoint gives the first by default and the second with `--raw_weights`."""
    out = tmp_path / "run"
    srtrain(tiny_job(photo_folder, out, "--epochs=1", "--ema=0.9"), tmp_path, wandb="disabled", check=True)
    (row,) = metrics(out)
    assert row["psnr_y"] != row["raw_psnr_y"]
    assert eval_on_tiny_val(out, tmp_path)["psnr_y"] == pytest.approx(row["psnr_y"], abs=1e-9)
    assert eval_on_tiny_val(out, tmp_path, "--raw_weights")["psnr_y"] == pytest.approx(row["raw_psnr_y"], abs=1e-9)

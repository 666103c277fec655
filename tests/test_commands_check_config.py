"""`srtrain check-config`: a job validated as training would validate it, without training; what the slurm/
scripts run before `accelerate launch`, which turns a worker's status 2 into its own 1 and adds a traceback."""

import subprocess

import pytest
from helpers import MAIN, ROOT, accelerate_launch, python

CHECK = ["-m", "srtrain", "check-config"]


def test_check_config_validates_without_training(tmp_path):
    check = [*CHECK, "--config", str(ROOT / "jobs" / "quick.yaml")]
    bad = python([*check, "--lr=0"], tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: lr must be a positive number, got 0.0"
    missing = python([*check, "--data.val=Set55"], tmp_path, check=False)  # a typo in a data set's name is found
    assert missing.returncode == 2 and "data.val: data source 'Set55' is neither a local path" in missing.stderr
    good = python(check, tmp_path, check=False)
    assert good.returncode == 0 and "configuration valid: espcn x4" in good.stdout
    helped = python([*check, "--help"], tmp_path, check=False)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: srtrain check-config") and not helped.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_launcher_turns_a_configuration_error_into_1_and_a_traceback(tmp_path):
    """Why check-config runs first (asserted, so that a launcher that starts passing statuses on shows up)."""
    launched = subprocess.run(
        [*accelerate_launch(1), MAIN, "--lr=0"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert launched.returncode == 1 and "error: lr must be a positive number, got 0.0" in launched.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "values",
    [
        ["--seed=-1"],
        ["--model.channels=0"],
        ["--model=edsr", "--model.n_blocks=-2"],
        ["--model=swinir", "--model.heads=7"],
        ["--model=rcan", "--model.reduction=0"],
        ["--model=imdn", "--model.channels=5"],
        ["--model=swinir", "--model.window=100"],  # (its check forward took 24 GB before)
    ],
    ids=lambda v: " ".join(v),
)
def test_values_no_model_or_trainer_can_use_fail_the_checks(values, tmp_path):
    """check-config (what the SLURM scripts run first) refuses them as training would, with status 2 and one line,
    and training refuses them before it makes a run directory or a W&B run."""
    checked = python([*CHECK, *values], tmp_path, check=False)
    assert checked.returncode == 2 and len(checked.stderr.strip().splitlines()) == 1, checked.stderr
    assert checked.stderr.startswith("error: ") and "configuration valid" not in checked.stdout
    trained = python(["-m", "srtrain", *values, f"--output_dir={tmp_path / 'run'}"], tmp_path, check=False)
    assert trained.returncode == 2 and trained.stderr == checked.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "wandb").exists()


def test_an_output_dir_that_is_a_file_fails_the_checks(tmp_path):
    (tmp_path / "taken").write_text("x")
    proc = python([*CHECK, f"--output_dir={tmp_path / 'taken'}"], check=False)
    assert proc.returncode == 2 and "is a file; pick a directory" in proc.stderr

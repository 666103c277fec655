"""Configuration: YAML + overrides, typed and validated before anything heavy starts."""

import functools
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import accelerate_launch

from srtrain.config import ConfigError, load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def config(*argv: str):
    return load_config(*parse_overrides(list(argv)))


def test_sweep_style_overrides():
    cfg = config("--model=srcnn", "--lr=0.001", "--scale=3", "--data.train=/some/folder", "--epochs", "7")
    assert (cfg.model.name, cfg.lr, cfg.scale, cfg.data.train, cfg.epochs) == (
        "srcnn",
        0.001,
        3,
        "/some/folder",
        7,
    )


def test_scientific_notation_and_bools():
    cfg = config("--lr=1e-4", "--data.cache=false", "--mixed_precision=bf16", "--model.channels=16")
    assert cfg.lr == 1e-4 and cfg.data.cache is False and cfg.mixed_precision == "bf16"
    assert cfg.model.args == {"channels": 16}


def test_yaml_file_then_overrides(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model: {name: espcn, channels: 8}\nscale: 2\nlr: 1e-3\ndata:\n  repeat: 3\n")
    cfg = load_config(*parse_overrides(["--config", str(job), "--data.repeat=5"]))
    assert cfg.model.args == {"channels": 8} and cfg.scale == 2 and cfg.lr == 1e-3 and cfg.data.repeat == 5


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--learning_rate=0.1"], "did you mean 'lr'"),
        (["--data.trian=x"], "did you mean 'data.train'"),
        (["--model.chanels=8"], "did you mean 'model.channels'"),
        (["--epochs=ten"], "'epochs' expects int"),
        (["--lr=fast"], "'lr' expects float"),
        (["--data.cache=maybe"], "'data.cache' expects bool"),
        (["--mixed_precision=fp8"], "one of 'no', 'bf16', 'fp16'"),
        (["--model=espnc"], "did you mean 'espcn'"),
        (["--scale=5"], "scale must be 2, 3 or 4"),
        (["--patch_size=50"], "multiple of scale 4"),
        (["--model.channels=wide"], "'model.channels' expects int"),
        (["--lr=0.001", "--min_lr=0.01"], "min_lr must be in [0, lr=0.001]"),
        (["--gamma=2"], "gamma (the step scheduler's decay factor) must be in (0, 1]"),
        (["--weight_decay=-0.1"], "weight_decay must be in [0, 1)"),
        (["--data.num_workers=-1"], "data.num_workers must be >= 0"),
        (["--checkpoint_every=-5"], "checkpoint_every (steps) must be >= 0"),
        (["--nan_policy=ignore"], "one of 'stop', 'skip'"),
        (["--grad_clip=nan"], "grad_clip must be a finite number"),
    ],
)
def test_errors_name_the_key_and_the_fix(argv, needle):
    with pytest.raises(ConfigError, match=None) as err:
        config(*argv)
    assert needle in str(err.value)


def test_a_missing_job_file_points_at_the_examples_by_absolute_path():
    with pytest.raises(ConfigError, match=f"'quick.yaml' does not exist \\(examples are in {ROOT / 'jobs'}, e.g."):
        load_config("quick.yaml")


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model: espcn\nepochs: [1\nlr: 2\n")
    with pytest.raises(ConfigError, match=r"job.yaml' line 3 is not valid YAML \(expected ',' or ']'"):
        load_config(job)


def test_model_options_follow_the_model(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'model.channels'"):
        config("--model=bicubic", "--model.channels=8")


def test_command_line_error_exits_before_training(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "srtrain" / "main.py"), "--lerning_rate=0.1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "did you mean 'lr'" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_check_config_validates_without_training(tmp_path):
    """What slurm/ scripts run before `accelerate launch`, which turns a worker's status 2 into its own 1 and adds
    a traceback (asserted here, so a launcher that starts passing statuses on shows up)."""
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    check = [sys.executable, "-m", "srtrain", "check-config", "--config", str(ROOT / "jobs" / "quick.yaml")]
    bad = run([*check, "--lr=0"])
    assert bad.returncode == 2 and bad.stderr.strip() == "error: lr must be a positive number, got 0.0"
    missing = run([*check, "--data.val=Set55"])  # a typo in a data set's name is found before a job is queued
    assert missing.returncode == 2 and "data.val: data source 'Set55' is neither a local path" in missing.stderr
    good = run(check)
    assert good.returncode == 0 and "configuration valid: espcn x4" in good.stdout
    helped = run([*check, "--help"])
    assert helped.returncode == 0 and helped.stdout.startswith("usage: srtrain check-config") and not helped.stderr
    launched = run([*accelerate_launch(1), str(ROOT / "srtrain" / "main.py"), "--lr=0"])
    assert launched.returncode == 1 and "error: lr must be a positive number, got 0.0" in launched.stderr
    assert not (tmp_path / "runs").exists()


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
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    checked = run([sys.executable, "-m", "srtrain", "check-config", *values])
    assert checked.returncode == 2 and len(checked.stderr.strip().splitlines()) == 1, checked.stderr
    assert checked.stderr.startswith("error: ") and "configuration valid" not in checked.stdout
    trained = run([sys.executable, "-m", "srtrain", *values, f"--output_dir={tmp_path / 'run'}"])
    assert trained.returncode == 2 and trained.stderr == checked.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "wandb").exists()


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("**/*.yaml")), ids=lambda p: p.name)
def test_every_job_file_is_valid(job):
    load_config(job)


def test_default_job_file_matches_the_defaults():
    spelled_out = load_config(ROOT / "jobs" / "espcn_x4.yaml")
    defaults = load_config()
    spelled_out.model.args = {}  # the file names the model's own defaults explicitly
    assert spelled_out == defaults


def test_an_output_dir_that_is_a_file_fails_the_checks(tmp_path):
    (tmp_path / "taken").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "srtrain", "check-config", f"--output_dir={tmp_path / 'taken'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "is a file; pick a directory" in proc.stderr

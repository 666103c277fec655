"""Configuration (srtrain/config.py): YAML + overrides, typed and validated before anything heavy starts. (The
`check-config` command: test_commands_check_config.py.)"""

import pytest
from helpers import ROOT

from srtrain.config import ConfigError, load_config, parse_overrides


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
        (["--compile_mode=cuda-graphs"], "one of 'default', 'reduce-overhead', 'max-autotune'"),
        (["--compile_mode=reduce-overhead"], "compile is false: set --compile=true (or drop --compile_mode)"),
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


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("**/*.yaml")), ids=lambda p: p.name)
def test_every_job_file_is_valid(job):
    load_config(job)


def test_default_job_file_matches_the_defaults():
    spelled_out = load_config(ROOT / "jobs" / "espcn_x4.yaml")
    defaults = load_config()
    spelled_out.model.args = {}  # the file names the model's own defaults explicitly
    assert spelled_out == defaults

"""Job configuration: dataclass defaults, a YAML file, then `--key=value` overrides.

Every value is typed and validated here, before any data is loaded or a model is built, so that a typo
costs a second rather than an hour. The dataclass defaults are the default job (ESPCN x4 on the sample
photographs that scikit-image ships).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from srtrain.losses import LossName
from srtrain.models import SCALES, model_options

CONFIG_FILE = "config.yaml"  # the configuration a run directory and each of its checkpoints keep


class ConfigError(ValueError):
    """A configuration problem, phrased so that the message says how to fix it."""


@dataclass
class ModelConfig:
    """The model's registered name plus the keyword arguments its builder accepts."""

    name: str = "espcn"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where HR (and optional LR) images come from and how training patches are drawn.

    `gray` is how gray validation images are scored: replicated to RGB first (as papers score their own
    models) or with the gray level used directly as Y (as the published bicubic tables were made).
    `streaming` reads the training source as a stream split across processes instead of opening it whole
    (for sources too large to index or download first). Unusable images stop the job before training unless
    `skip_bad`, which skips them with a warning each, up to `max_bad_fraction` of a source. `on_device` holds the
    decoded training images on the accelerator and cuts each batch there (`srtrain.data.device`; docs/data.md).
    """

    train: str = "default"
    val: str = "default"
    train_split: str = "train"
    val_split: str = "validation"
    hr_column: str = "hr"
    lr_column: str = "lr"
    repeat: int = 400
    num_workers: int = 0
    cache: bool = True
    max_val_images: int = 0
    gray: Literal["replicate", "direct"] = "replicate"
    streaming: bool = False
    on_device: bool = False
    skip_bad: bool = False
    max_bad_fraction: float = 0.01


@dataclass
class WandbConfig:
    """Weights & Biases run settings; an empty `mode` means online with an API key, else offline. `group` puts
    related runs together (`srtrain sweep` sets it to the sweep's name)."""

    project: str = "srtrain"
    entity: str = ""
    name: str = ""
    group: str = ""
    mode: Literal["", "online", "offline", "disabled"] = ""


@dataclass
class Config:
    """One training job. `batch_size` is per process; the global batch is printed at start.

    The LR schedule runs over the training's progress from 0 to 1: steps done out of `epochs` worth of
    steps or, with `time_budget_min`, training minutes spent out of the budget (`epochs` is then a cap).
    `warmup` and `step_every` are fractions of that progress.
    `checkpoint_every` (optimizer steps) and `checkpoint_every_min` (training minutes) also save `checkpoints/last`
    inside an epoch (0: only at epoch ends). `nan_policy: skip` skips a step whose loss is NaN/inf instead of
    stopping, up to `nan_max_skips` in a row. `compile` runs the training forward through torch.compile, in
    `compile_mode` (`reduce-overhead` replays the step as CUDA graphs; docs/performance.md says where it pays).
    `ema` > 0 keeps an exponential moving average of the weights with that decay (srtrain/ema.py), validated beside
    the trained weights, followed by `best` and used by eval.
    `val_ensemble` validates the x8 self-ensemble (srtrain.ensemble): the scores `srtrain eval --ensemble` gives,
    at 8 times the validation time.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    scale: int = 4
    epochs: int = 20
    batch_size: int = 16
    grad_accum: int = 1
    patch_size: int = 96
    lr: float = 3e-3
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    scheduler: Literal["cosine", "step", "constant"] = "cosine"
    warmup: float = 0.0
    min_lr: float = 1e-5
    step_every: float = 0.5
    gamma: float = 0.5
    time_budget_min: float = 0.0
    init_from: str = ""
    loss: LossName = "l1"
    grad_clip: float = 0.0
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    channels_last: bool = False
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    cpu_threads: int = 0
    output_dir: str = ""
    resume: str = ""
    val_every: int = 1
    val_ensemble: bool = False
    num_samples: int = 3
    checkpoint_every: int = 0
    checkpoint_every_min: float = 0.0
    nan_policy: Literal["stop", "skip"] = "stop"
    nan_max_skips: int = 10
    ema: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as written to `config.yaml` and sent to W&B."""
        d = dataclasses.asdict(self)
        d["model"] = {"name": self.model.name, **self.model.args}
        return d

    def to_yaml(self) -> str:
        """The text of a run's and a checkpoint's CONFIG_FILE: what `saved_config` reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "wandb": WandbConfig}


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys(model_name: str | None = None) -> list[str]:
    """Every settable dotted key, including the options of `model_name` when it is a known model."""
    keys = [k for k in _fields(Config) if k not in _SECTIONS]
    keys += [f"data.{k}" for k in _fields(DataConfig)]
    keys += [f"wandb.{k}" for k in _fields(WandbConfig)]
    keys += ["model", "model.name"]
    if model_name is not None:
        keys += [f"model.{k}" for k in model_options(model_name)]
    return keys


# Names other SR code bases use for our keys, which string similarity alone would not find.
_SYNONYMS = {
    "learning_rate": "lr",
    "upscale_factor": "scale",
    "upscale": "scale",
    "crop_size": "patch_size",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "batch": "batch_size",
    "precision": "mixed_precision",
    "out_dir": "output_dir",
    "arch": "model",
}


def _unknown_key(key: str, model_name: str | None) -> ConfigError:
    keys = valid_keys(model_name)
    close = difflib.get_close_matches(key, keys + list(_SYNONYMS), n=1, cutoff=0.5)
    hint = f"; did you mean '{_SYNONYMS.get(close[0], close[0])}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint} Valid keys: {', '.join(sorted(keys))}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert `value` (from YAML or the command line) to `tp`, or raise naming the key and type."""
    if tp is inspect.Parameter.empty or tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        text = "" if value is None else str(value)
        if text in allowed:
            return text
    elif origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None) and value in (None, "null", "none", "None"):
                return None
            try:
                return coerce(key, value, arm)
            except ConfigError:
                continue
    elif tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
    elif tp in (int, float):
        numeric = (int,) if tp is int else (int, float)
        if isinstance(value, numeric) and not isinstance(value, bool):
            return tp(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return tp(value)
    elif tp is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key in _SECTIONS:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_overrides(argv: list[str]) -> tuple[str | None, dict[str, str]]:
    """Split `--config FILE` from `--key=value` / `--key value` overrides, keeping their order."""
    config_file = None
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument '{arg}': overrides look like --key=value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(argv):
                raise ConfigError(f"'--{key}' needs a value: write --{key}=VALUE")
            value = argv[i + 1]
            i += 1
        key = key.replace("-", "_") if key != "config" else key
        if key == "config":
            config_file = value
        else:
            overrides[key] = value
        i += 1
    return config_file, overrides


def examples(folder: str, example: str) -> str:
    """Where the checkout's example files are, for an error's hint, by absolute path: a relative one would name the
    user's working directory ('' when srtrain is installed without its checkout)."""
    found = Path(__file__).resolve().parents[1] / folder
    return f" (examples are in {found}, e.g. {found / example})" if found.is_dir() else ""


def read_yaml(path: Path) -> Any:
    """A YAML file people write (a job, a sweep); a syntax error becomes a ConfigError naming the file and line."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        problem = getattr(err, "problem", None) or err
        raise ConfigError(f"'{path}'{line} is not valid YAML ({problem}); fix it and run again") from err


def _read_mapping(path: Path) -> dict[str, Any]:
    """A YAML configuration file's keys, flattened to `section.key`."""
    loaded = read_yaml(path) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    if isinstance(loaded.get("model"), str):
        loaded["model"] = {"name": loaded["model"]}
    return _flatten(loaded)


def load_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build a validated Config from dataclass defaults, an optional YAML file and overrides."""
    values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist{examples('jobs', 'quick.yaml')}")
        values.update(_read_mapping(path))
    for key, value in (overrides or {}).items():
        values["model.name" if key == "model" else key] = value
    cfg = _build(values)
    validate(cfg)
    return cfg


def saved_config(file: Path) -> Config:
    """The configuration a run or a checkpoint saved (its CONFIG_FILE), read back as it was written: keys and types
    are checked, relations and paths are not (an `init_from` file may be gone since). A key this srtrain does not
    know (a config from another version) is a ConfigError naming the file."""
    try:
        return _build(_read_mapping(file))
    except ConfigError as err:
        raise ConfigError(f"{file}: {err}") from None


def _build(values: dict[str, Any]) -> Config:
    """A Config from `section.key` values, each checked against its key's type (the model's options included)."""
    cfg = Config()
    model_name = str(values.get("model.name", cfg.model.name))
    try:
        options = model_options(model_name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    top = _fields(Config)
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if not dot:
            if key not in top or key in _SECTIONS:
                raise _unknown_key(key, model_name)
            setattr(cfg, key, coerce(key, value, top[key]))
        elif section == "model":
            if name == "name":
                cfg.model.name = coerce(key, value, str)
            elif name in options:
                cfg.model.args[name] = coerce(key, value, options[name])
            else:
                raise _unknown_key(key, model_name)
        elif section in _SECTIONS:
            sub = _fields(_SECTIONS[section])
            if name not in sub:
                raise _unknown_key(key, model_name)
            setattr(getattr(cfg, section), name, coerce(key, value, sub[name]))
        else:
            raise _unknown_key(key, model_name)
    return cfg


def _numbers(cfg: Config) -> list[tuple[str, float]]:
    return [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), float)]


def validate(cfg: Config) -> None:
    """Check relations between values that types alone cannot express."""
    checks = [
        (cfg.scale in SCALES, f"scale must be {', '.join(map(str, SCALES[:-1]))} or {SCALES[-1]}, got {cfg.scale}"),
        (cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.grad_accum >= 1, f"grad_accum must be >= 1, got {cfg.grad_accum}"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), f"lr must be a positive number, got {cfg.lr}"),
        (0 <= cfg.min_lr <= cfg.lr, f"min_lr must be in [0, lr={cfg.lr}], got {cfg.min_lr}"),
        (0 < cfg.gamma <= 1, f"gamma (the step scheduler's decay factor) must be in (0, 1], got {cfg.gamma}"),
        (0 <= cfg.weight_decay < 1, f"weight_decay must be in [0, 1), got {cfg.weight_decay}"),
        (
            cfg.patch_size % cfg.scale == 0 and cfg.patch_size >= 4 * cfg.scale,
            f"patch_size (HR pixels) must be a multiple of scale {cfg.scale} and at least {4 * cfg.scale}, "
            f"got {cfg.patch_size}; try --patch_size={max(4, round(cfg.patch_size / cfg.scale)) * cfg.scale}",
        ),
        (
            0 <= cfg.data.max_bad_fraction < 1,
            f"data.max_bad_fraction must be in [0, 1), got {cfg.data.max_bad_fraction}",
        ),
        (cfg.data.repeat >= 1, f"data.repeat must be >= 1, got {cfg.data.repeat}"),
        (
            cfg.data.num_workers >= 0,
            f"data.num_workers must be >= 0 (0 = load in the main process), got {cfg.data.num_workers}",
        ),
        (
            not (cfg.data.on_device and cfg.data.streaming),
            "data.on_device holds the whole training set on the device, which a stream never is: set "
            "--data.streaming=false (or --data.on_device=false)",
        ),
        (
            not (cfg.data.on_device and cfg.data.num_workers),
            "data.on_device cuts each batch in the main process (one gather on the device, nothing for loader workers "
            f"to do): set --data.num_workers=0 (now {cfg.data.num_workers}) or --data.on_device=false",
        ),
        (
            cfg.compile or cfg.compile_mode == "default",
            f"compile_mode={cfg.compile_mode} applies only to a compiled training forward, and compile is false: "
            "set --compile=true (or drop --compile_mode)",
        ),
        (cfg.data.max_val_images >= 0, f"data.max_val_images must be >= 0 (0 = all), got {cfg.data.max_val_images}"),
        (0 <= cfg.warmup < 1, f"warmup is a fraction of training in [0, 1), got {cfg.warmup}"),
        (0 < cfg.step_every <= 1, f"step_every is a fraction of training in (0, 1], got {cfg.step_every}"),
        (cfg.cpu_threads >= 0, "cpu_threads must be >= 0 (0 = the cores divided among this node's processes)"),
        (cfg.time_budget_min >= 0, f"time_budget_min must be >= 0 (0 = no budget), got {cfg.time_budget_min}"),
        (cfg.init_from == "" or Path(cfg.init_from).exists(), f"init_from: '{cfg.init_from}' does not exist"),
        (cfg.val_every >= 1, f"val_every must be >= 1, got {cfg.val_every}"),
        (cfg.num_samples >= 0, f"num_samples must be >= 0, got {cfg.num_samples}"),
        (cfg.grad_clip >= 0, f"grad_clip must be >= 0 (0 turns clipping off), got {cfg.grad_clip}"),
        (
            cfg.checkpoint_every >= 0,
            f"checkpoint_every (steps) must be >= 0 (0 = at epoch ends only), got {cfg.checkpoint_every}",
        ),
        (cfg.checkpoint_every_min >= 0, f"checkpoint_every_min must be >= 0 (0 = off), got {cfg.checkpoint_every_min}"),
        (cfg.nan_max_skips >= 1, f"nan_max_skips must be >= 1, got {cfg.nan_max_skips}"),
        (0 <= cfg.ema < 1, f"ema (the weight average's decay, e.g. 0.999; 0 = off) must be in [0, 1), got {cfg.ema}"),
        (0 <= cfg.seed < 2**32, f"seed must be in [0, 2**32) (torch and numpy seeds), got {cfg.seed}"),
        (
            not cfg.output_dir or not Path(cfg.output_dir).exists() or Path(cfg.output_dir).is_dir(),
            f"output_dir '{cfg.output_dir}' is a file; pick a directory",
        ),
        (
            cfg.resume in ("", "auto") or Path(cfg.resume).exists(),
            f"resume must be '', 'auto' or an existing checkpoint directory, got '{cfg.resume}'",
        ),
    ]
    checks = [(math.isfinite(v), f"{k} must be a finite number, got {v}") for k, v in _numbers(cfg)] + checks
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)

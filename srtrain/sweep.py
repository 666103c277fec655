"""W&B sweep YAMLs without a W&B server: the points of a grid, in the order W&B's controller runs them.

A grid's points are the product of its parameters' values with the names sorted (the last name varies
fastest), as W&B's sweep engine orders them; `value:` parameters are the same at every point. Point I is
`srtrain/main.py` with the agent's own `--key=value` arguments (built by wandb's sweep utilities), a fixed run
directory `runs/<sweep>/<I>` and `--resume=auto`, so a rerun or requeued point continues instead of
starting over. Random and bayes sweeps choose each run on the W&B controller and cannot be expanded here.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from srtrain.config import ConfigError, examples, load_config, parse_overrides, read_yaml
from srtrain.models import build_model
from srtrain.rundir import run_dir_name
from srtrain.tracking import SWEEP_METRICS

MAIN = Path(__file__).resolve().parent / "main.py"
GRID_ARRAY = "slurm/grid_array.sbatch"


def load_sweep(path: Path) -> dict[str, Any]:
    """The sweep YAML as a mapping, with the parts srtrain relies on checked."""
    if not path.is_file():
        raise ConfigError(f"sweep file '{path}' does not exist{examples('sweeps', 'grid.yaml')}")
    sweep = read_yaml(path)
    if not isinstance(sweep, dict) or not isinstance(sweep.get("parameters"), dict) or not sweep["parameters"]:
        raise ConfigError(f"sweep file '{path}' needs a 'parameters' mapping of config keys to values")
    metric = sweep.get("metric", {}).get("name")
    if metric is not None and metric not in SWEEP_METRICS:
        raise ConfigError(
            f"{path}: metric '{metric}' is never logged by srtrain, so the sweep could not rank its runs; "
            f"use one of {', '.join(SWEEP_METRICS)}"
        )
    command = sweep.get("command")
    if command is not None and "${args}" not in command:
        raise ConfigError(f"{path}: 'command' lacks ${{args}}, so the swept values would never reach srtrain")
    return sweep


def sweep_name(path: Path, sweep: dict[str, Any]) -> str:
    """The sweep's `name`, else the file's stem: the W&B group and the folder under runs/."""
    return str(sweep.get("name") or path.stem)


def _values(name: str, spec: Any) -> list[Any]:
    if isinstance(spec, dict) and isinstance(spec.get("values"), list) and spec["values"]:
        if len({yaml.safe_dump(v) for v in spec["values"]}) != len(spec["values"]):
            raise ConfigError(f"parameter '{name}' lists a value twice; a grid runs each value once")
        return spec["values"]
    if isinstance(spec, dict) and "value" in spec:
        return [spec["value"]]
    if isinstance(spec, dict) and spec.get("distribution") == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    raise ConfigError(
        f"parameter '{name}' has no 'values' list or single 'value'; a grid can only enumerate listed values"
    )


def grid_points(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every point of a grid sweep, in W&B's order; random and bayes are refused with the reason."""
    method = sweep.get("method")
    if method != "grid":
        raise ConfigError(
            f"method '{method}' cannot run offline: W&B's controller chooses each run of a {method} sweep (bayes "
            "from the results of the runs before it), so start it with `wandb sweep FILE` and `wandb agent SWEEP_ID`, "
            "or write a grid (method: grid) to run without a server"
        )
    names = sorted(sweep["parameters"])
    values = [_values(name, sweep["parameters"][name]) for name in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def point_args(name: str, index: int, point: dict[str, Any]) -> list[str]:
    """The `srtrain/main.py` arguments of one point: the agent's `--key=value` form, its own run directory."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    own = {
        "output_dir": str(run_dir_name("sweep", sweep=name, point=index)),
        "wandb.group": name,
        "wandb.name": f"{name}-{index}",
    }
    values = {"resume": "auto", **point, **own}
    return create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args"]


def check_point(args: list[str]) -> None:
    """Dry run of one point: the config resolves and the model builds; no data is read, nothing is trained."""
    config_file, overrides = parse_overrides(args)
    cfg = load_config(config_file, overrides)
    build_model(cfg.model.name, cfg.scale, **cfg.model.args)


def run_point(args: list[str]) -> int:
    """Train one point here, through `accelerate launch` (its default or configured process count)."""
    return subprocess.call(["accelerate", "launch", str(MAIN), *args])


def submit_array(path: Path, n_points: int, sbatch_options: str) -> int:
    """`sbatch --array=0-(N-1) slurm/grid_array.sbatch FILE`: one array task per point."""
    if not Path(GRID_ARRAY).is_file():
        raise ConfigError(f"{GRID_ARRAY} not found: submit from the srtrain repository root")
    command = ["sbatch", f"--array=0-{n_points - 1}", *shlex.split(sbatch_options), GRID_ARRAY, str(path)]
    print(shlex.join(command), file=sys.stderr)
    return subprocess.call(command)

"""`srtrain [train] [--config FILE] [--key=value ...]`: validate the job, train it (srtrain.train), end with the
status a batch script can act on. (`srtrain --help` lists the keys: srtrain.cli.)"""

from __future__ import annotations

import contextlib

from rich.console import Console

from srtrain.commands.common import error
from srtrain.config import ConfigError, load_config, parse_overrides
from srtrain.data import DataError


def main(argv: list[str]) -> int:
    """Parse, validate, train. Configuration and data errors end with one clear line and status 2, a diverged run
    or a failed checkpoint write with one line and status 1, a stop on a signal with EXIT_RESUMABLE (75)."""
    from srtrain.checkpoint import CheckpointError
    from srtrain.models.weights import WeightsError
    from srtrain.stopping import EXIT_RESUMABLE, StoppedToResume
    from srtrain.train import AlreadyFinished, NonFiniteLossError, train

    try:
        config_file, overrides = parse_overrides(argv)
        train(load_config(config_file, overrides))
    except (ConfigError, DataError, WeightsError) as err:
        return error(err)
    except (NonFiniteLossError, CheckpointError) as err:
        return error(err, 1)
    except AlreadyFinished as done:
        Console().print(f"srtrain: {done}", highlight=False, soft_wrap=True)
        return 0
    except StoppedToResume as stop:
        with contextlib.suppress(OSError):  # saved: a closed stderr must not turn the stop into a failure
            Console(stderr=True).print(f"[bold yellow]srtrain:[/] {stop}", highlight=False, soft_wrap=True)
        return EXIT_RESUMABLE
    return 0

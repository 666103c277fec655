"""Model registry: each model file registers its nn.Module class (or a builder function) by name.

The constructor's keyword arguments besides `scale` (with type hints and defaults) are the model's
options: the config validates `--model.KEY=VALUE` against them, so a model file is the single place
that defines them.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from torch import nn

Builder = Callable[..., nn.Module]
SCALES = (2, 3, 4)  # the upscale factors srtrain trains and scores; every model of the zoo builds for each
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator that makes a builder available to `build_model(name, ...)`."""

    def add(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = fn
        return fn

    return add


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def _builder(name: str) -> Builder:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown model '{name}'{hint} Available: {', '.join(available_models())}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts besides `scale`, mapped to their type hints."""
    fn = _builder(name)
    hints = typing.get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    params = inspect.signature(fn).parameters
    return {k: hints.get(k, inspect.Parameter.empty) for k in params if k != "scale"}


def build_model(name: str, scale: int, **options: Any) -> nn.Module:
    """Build a registered model for an upscale factor; LR in [0, 1] goes in, SR comes out."""
    return _builder(name)(scale=scale, **options)


def weights_free_options(name: str) -> dict[str, Any]:
    """Options that keep a model from loading pretrained weights: for restoring a checkpoint (whose
    weights replace them anyway) and for counting, where a missing weights file must not matter."""
    return {k: v for k, v in {"pretrained": False, "weights": ""}.items() if k in model_options(name)}

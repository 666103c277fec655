"""The model zoo. Importing this package registers every model file below."""

from srtrain.models import bicubic, carn, edsr, espcn, imdn, rcan, resnet50, srcnn, srresnet, swinir  # noqa: F401  (registration side effect)
from srtrain.models.registry import (
    SCALES,
    available_models,
    build_model,
    model_options,
    register,
    weights_free_options,
)

__all__ = ["SCALES", "available_models", "build_model", "model_options", "register", "weights_free_options"]

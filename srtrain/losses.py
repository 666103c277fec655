"""The training losses by name: `loss: NAME` picks one for the training step and for the validation loss alike, and
the configuration accepts exactly the names registered here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

# LapSRN's epsilon (EDVR's too), on pixel values in [0, 1]: a quarter of one 8-bit level. docs/configuration.md
# says why it is not BasicSR's default and not a configuration key.
CHARBONNIER_EPS = 1e-3


def charbonnier(sr: Tensor, hr: Tensor) -> Tensor:
    """mean(sqrt((sr - hr)^2 + eps^2)): L1 for errors well above eps, but differentiable at zero error (its
    gradient there is 0, where L1's jumps from -1 to 1), so nearly converged pixels are not pushed back and forth."""
    return torch.sqrt((sr - hr).square() + CHARBONNIER_EPS**2).mean()


Loss = Callable[[Tensor, Tensor], Tensor]  # (SR, HR) in [0, 1] -> the mean over every pixel
LOSSES: dict[str, Loss] = {
    "l1": torch.nn.functional.l1_loss,
    "mse": torch.nn.functional.mse_loss,
    "charbonnier": charbonnier,
}
LossName = Literal[tuple(LOSSES)]  # the `loss` key's type: the names above, checked when a job is read

"""The x8 geometric self-ensemble of EDSR+ (Lim et al. 2017): the model's output averaged over the 8 flips and
quarter turns of its input (the dihedral group D4), each output turned back first.

A model trained on flipped and rotated patches makes slightly different errors in each orientation; their mean
is a better image (the "+" rows of the SR tables) at 8 times the inference cost. The mean is taken in float32
before any clamping or rounding, as EDSR's `forward_x8` does, so a score is the ensemble's, not an average of
rounded images.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

# Each element of D4 as (mirror left-right first, then this many quarter turns counter-clockwise).
TRANSFORMS: tuple[tuple[bool, int], ...] = tuple((mirror, turns) for mirror in (False, True) for turns in range(4))


def transform(x: Tensor, mirror: bool, turns: int) -> Tensor:
    """`x` (..., H, W) mirrored left-right when `mirror`, then turned `turns` quarter turns."""
    return (x.flip(-1) if mirror else x).rot90(turns, (-2, -1))


def invert(y: Tensor, mirror: bool, turns: int) -> Tensor:
    """Undo `transform(., mirror, turns)`: turn back, then mirror back."""
    y = y.rot90(-turns, (-2, -1))
    return y.flip(-1) if mirror else y


def ensemble_forward(model: Callable[[Tensor], Tensor], lr: Tensor) -> Tensor:
    """The float32 mean of `model` over the 8 transforms of `lr` (N, C, H, W), each output inverted.

    Summed one output at a time, so memory is two outputs rather than eight. A model that does not scale both axes
    alike (its output for a turned image does not turn back into the shape of its plain output) cannot be
    ensembled this way, and is refused by name rather than averaged into a wrong image."""
    total = model(lr).float()
    for mirror, turns in TRANSFORMS[1:]:
        sr = invert(model(transform(lr, mirror, turns)), mirror, turns)
        if sr.shape != total.shape:
            raise ValueError(
                f"self-ensemble: {type(model).__name__}'s output for the input mirrored={mirror}, turned {turns} "
                f"quarter turn(s) comes back as {tuple(sr.shape)}, not {tuple(total.shape)} as for the input "
                "itself; the ensemble needs a model that scales height and width alike: run it without "
                "--ensemble (val_ensemble: false)"
            )
        total += sr.float()
    return total / len(TRANSFORMS)

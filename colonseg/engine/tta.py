"""Test-time augmentation: average a model's probabilities over flipped and rotated views.

Modes: ``none`` (one pass), ``flip`` (the image and its horizontal mirror, two passes) and
``d4`` (all eight symmetries of the square — four quarter turns, each with and without the
mirror — eight passes). An endoscope has no up: a colonoscopy frame turned by 90° is as
plausible as the original, so ``d4`` asks nothing of the model that the data does not allow.
Each view's probabilities are turned back before averaging, so the result of ``d4`` is exactly
equivariant: turning the input turns the output the same way, whatever the model.

Example:
    >>> prob = average_views(lambda x: model(x).sigmoid(), images, "d4")
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from colonseg.errors import ColonsegError

__all__ = ["TTA_LABELS", "TTA_MODES", "average_views", "tta_mode", "tta_passes"]

TTA_MODES = ("none", "flip", "d4")
TTA_LABELS = {"none": "no TTA", "flip": "flip TTA (2 passes)", "d4": "D4 TTA (8 views)"}
_VIEWS = {
    "none": [(0, False)],
    "flip": [(0, False), (0, True)],
    "d4": [(turns, mirror) for turns in range(4) for mirror in (False, True)],
}


def tta_mode(value: bool | str | None) -> str:
    """A TTA mode from its name or a legacy boolean (``True``: flip; ``False`` or None: none)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "flip"
    mode = str(value).lower()
    if mode not in TTA_MODES:
        raise ColonsegError(f"Unknown TTA '{value}'. Available: {', '.join(TTA_MODES)}.")
    return mode


def tta_passes(mode: str) -> int:
    """How many forward passes ``mode`` costs."""
    return len(_VIEWS[tta_mode(mode)])


def average_views(
    predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str
) -> torch.Tensor:
    """Mean of ``predict`` over the views of ``x`` ``(B, C, H, W)`` that ``mode`` names, each
    turned back to ``x``'s orientation. Quarter turns need a square input."""
    mode = tta_mode(mode)
    views = _VIEWS[mode]
    if mode == "d4" and x.shape[-1] != x.shape[-2]:
        raise ColonsegError(
            f"TTA d4 turns the input by 90°: it needs a square input size, not "
            f"{x.shape[-2]}×{x.shape[-1]} (use --tta flip)"
        )
    total = None
    for turns, mirror in views:
        view = x.flip(-1) if mirror else x
        view = torch.rot90(view, turns, (-2, -1)).contiguous(memory_format=torch.channels_last)
        prob = torch.rot90(predict(view), -turns, (-2, -1))
        prob = prob.flip(-1) if mirror else prob
        total = prob if total is None else total + prob
    return total / len(views)

"""Per-image counts of a batch on tensors, for the metrics logged while training (the same
definitions as :mod:`colonseg.metrics.functional`, which scores full-size numpy masks)."""

from __future__ import annotations

import torch

__all__ = ["batch_confusion", "class_counts", "dice_per_image"]


def batch_confusion(probs: torch.Tensor, target: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-image ``(tp, fp, fn, tn)`` counts, shape ``(B, 4)``, for binary maps ``(B, 1, H, W)``."""
    pred = probs >= threshold
    gt = target >= 0.5
    dims = tuple(range(1, pred.ndim))
    tp = (pred & gt).sum(dims)
    fp = (pred & ~gt).sum(dims)
    fn = (~pred & gt).sum(dims)
    tn = (~pred & ~gt).sum(dims)
    return torch.stack([tp, fp, fn, tn], 1).double()


def class_counts(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """``(tp, fp, fn)`` of each foreground class 1..classes-1 over a batch: ``(classes-1, 3)``."""
    rows = []
    for c in range(1, classes):
        p, t = pred == c, target == c
        rows.append(torch.stack([(p & t).sum(), (p & ~t).sum(), (~p & t).sum()]))
    return torch.stack(rows).double()


def dice_per_image(c: torch.Tensor) -> torch.Tensor:
    """Dice of each row of ``(tp, fp, fn, ...)`` counts; 1 where truth and prediction are empty
    (the empty-mask rule of ``metrics.functional``)."""
    tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(tp))

"""Per-image segmentation metrics on numpy arrays.

Empty-mask rule (one rule for every ratio): when a ratio's denominator is zero, the metric is 1
if the image is predicted without error (no false positive and no false negative) and 0
otherwise. So an empty ground truth with an empty prediction scores Dice = IoU = precision =
recall = 1, and an empty ground truth with any false positive scores 0. HD95 is 0 when both are
empty and NaN (left out of means, counted in ``hd95_missing``) when only one of them is.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["confusion", "ratio", "binary_metrics", "compute_dice", "mean_dice_256", "hd95"]


def confusion(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of two boolean-like maps of the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    p, t = pred.astype(bool), target.astype(bool)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, fn, p.size - tp - fp - fn


def ratio(num: float, den: float, perfect: bool) -> float:
    """``num / den``, or the empty-mask rule's 1.0/0.0 when ``den`` is zero."""
    if den == 0:
        return 1.0 if perfect else 0.0
    return float(num) / float(den)


def binary_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision, recall, F1, accuracy and specificity of one binary prediction."""
    tp, fp, fn, tn = confusion(pred, target)
    perfect = fp == 0 and fn == 0
    dice = ratio(2 * tp, 2 * tp + fp + fn, perfect)
    return {
        "dice": dice,
        "iou": ratio(tp, tp + fp + fn, perfect),
        "precision": ratio(tp, tp + fp, perfect),
        "recall": ratio(tp, tp + fn, perfect),
        "f1": dice,
        "accuracy": ratio(tp + tn, tp + fp + fn + tn, perfect),
        "specificity": ratio(tn, tn + fp, perfect),
    }


def compute_dice(pred, target) -> float:
    """Mean Dice over images of binary predictions and targets: one ``(H, W)`` pair or batches
    ``(B, H, W)`` / ``(B, 1, H, W)``, numpy arrays or torch tensors (the empty-mask rule above).

    Example:
        >>> compute_dice(logits.sigmoid() > 0.5, masks)
    """
    p, t = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x) for x in (pred, target))
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    if p.ndim == 2:
        return binary_metrics(p > 0, t > 0)["dice"]
    p, t = p.reshape(p.shape[0], -1), t.reshape(t.shape[0], -1)
    return float(np.mean([binary_metrics(a > 0, b > 0)["dice"] for a, b in zip(p, t, strict=True)]))


def mean_dice_256(prob: np.ndarray, target: np.ndarray) -> float:
    """Dice averaged over the 256 thresholds 0..255 of the map scaled to 8 bits.

    This is the PraNet evaluation toolbox's ``meanDic`` (``pred >= t`` for ``t = 0..255``), with
    the empty-mask rule above applied at each threshold.
    """
    q = np.clip(np.round(np.asarray(prob, np.float64) * 255), 0, 255).astype(np.int64)
    t = target.astype(bool)
    fg_hist = np.bincount(q[t], minlength=256)
    bg_hist = np.bincount(q[~t], minlength=256)
    tp = np.cumsum(fg_hist[::-1])[::-1]  # pixels >= threshold, for thresholds 0..255
    fp = np.cumsum(bg_hist[::-1])[::-1]
    fn = int(t.sum()) - tp
    den = 2 * tp + fp + fn
    perfect = (fp == 0) & (fn == 0)
    dice = np.where(den > 0, 2 * tp / np.maximum(den, 1), perfect.astype(np.float64))
    return float(dice.mean())


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """95th percentile of the symmetric surface distance, in pixels."""
    p, t = pred.astype(bool), target.astype(bool)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("nan")
    sp, st = _surface(p), _surface(t)
    dist_to_t = ndimage.distance_transform_edt(~st)
    dist_to_p = ndimage.distance_transform_edt(~sp)
    d = np.concatenate([dist_to_t[sp], dist_to_p[st]])
    return float(np.percentile(d, 95))

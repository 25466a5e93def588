"""Multi-class scores from a pixel confusion matrix pooled over a dataset.

Per-class Dice and IoU are pooled over all pixels of all images (``2·ΣTP / (2·ΣTP + ΣFP + ΣFN)``),
as NeoUNet and BlazeNeo report ``dice_neo``/``dice_non`` on NeoPolyp: per-image class Dice is
undefined on the many frames that hold only one of the two classes.

Example:
    >>> meter = ConfusionMeter(3)
    >>> meter.update(pred_classes, true_classes)     # (H, W) class maps
    >>> meter.class_scores(("bg", "neo", "non"))     # {"dice_neo", "dice_non", "iou_neo", ...}
"""

from __future__ import annotations

import numpy as np

__all__ = ["ConfusionMeter"]


class ConfusionMeter:
    """Accumulates a ``(C, C)`` pixel confusion matrix: rows truth, columns prediction."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Add one image; return its own confusion matrix."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
        c = self.num_classes
        idx = target.astype(np.int64).reshape(-1) * c + pred.astype(np.int64).reshape(-1)
        m = np.bincount(idx, minlength=c * c).reshape(c, c)
        self.matrix += m
        return m

    def class_scores(self, keys: tuple[str, ...]) -> dict[str, float]:
        """``dice_<key>`` and ``iou_<key>`` of every foreground class (pooled)."""
        return scores_from_matrix(self.matrix, keys)

    def normalized(self) -> list[list[float]]:
        """The matrix with each truth row divided by its total (recall on the diagonal)."""
        rows = self.matrix.sum(1, keepdims=True)
        return (self.matrix / np.maximum(rows, 1)).round(6).tolist()


def scores_from_matrix(matrix: np.ndarray, keys: tuple[str, ...]) -> dict[str, float]:
    """Dice and IoU per foreground class of a confusion matrix; NaN where a class never occurs."""
    out: dict[str, float] = {}
    for c in range(1, len(keys)):
        tp = matrix[c, c]
        fp = matrix[:, c].sum() - tp
        fn = matrix[c, :].sum() - tp
        den = 2 * tp + fp + fn
        out[f"dice_{keys[c]}"] = float(2 * tp / den) if den else float("nan")
        out[f"iou_{keys[c]}"] = float(tp / (tp + fp + fn)) if den else float("nan")
    return out

"""Multi-class scores from a pixel confusion matrix pooled over a dataset.

Dice and IoU are pooled over all pixels of all images (``2·ΣTP / (2·ΣTP + ΣFP + ΣFN)``, "micro"),
as NeoUNet and BlazeNeo report ``dice_seg``/``dice_neo``/``dice_non`` on NeoPolyp: per-image class
Dice is undefined on the many frames that hold only one of the two classes. ``seg`` is polyp vs
background with the foreground classes merged. :func:`kaggle_dice` is the other way round, the
BKAI-IGH NeoPolyp Kaggle leaderboard's score: Dice per image and class, then the mean.

Example:
    >>> meter = ConfusionMeter(3)
    >>> meter.update(pred_classes, true_classes)     # (H, W) class maps
    >>> meter.class_scores(("bg", "neo", "non"))     # {"dice_neo", "dice_non", "iou_neo", ...}
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ConfusionMeter",
    "kaggle_dice",
    "mean_iou",
    "pooled_binary_scores",
    "scores_from_matrix",
]


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
        """``dice_seg``, ``iou_seg`` and ``dice_<key>``, ``iou_<key>`` of every foreground class."""
        return scores_from_matrix(self.matrix, keys)

    def normalized(self) -> list[list[float]]:
        """The matrix with each truth row divided by its total (recall on the diagonal)."""
        rows = self.matrix.sum(1, keepdims=True)
        return (self.matrix / np.maximum(rows, 1)).round(6).tolist()


def _dice_iou(tp: int, fp: int, fn: int) -> tuple[float, float]:
    den = 2 * tp + fp + fn
    if not den:
        return float("nan"), float("nan")
    return float(2 * tp / den), float(tp / (tp + fp + fn))


def scores_from_matrix(matrix: np.ndarray, keys: tuple[str, ...]) -> dict[str, float]:
    """Dice and IoU of polyp vs background (``seg``) and of each foreground class; NaN where a
    class occurs neither in the truth nor in the prediction."""
    out: dict[str, float] = {}
    seg = _dice_iou(matrix[1:, 1:].sum(), matrix[0, 1:].sum(), matrix[1:, 0].sum())
    out["dice_seg"], out["iou_seg"] = seg
    for c in range(1, len(keys)):
        tp = matrix[c, c]
        dice, iou = _dice_iou(tp, matrix[:, c].sum() - tp, matrix[c, :].sum() - tp)
        out[f"dice_{keys[c]}"], out[f"iou_{keys[c]}"] = dice, iou
    return out


def mean_iou(matrix: np.ndarray) -> dict[str, float]:
    """MSSG's ``miou``: IoU of every class (background included) from the pooled matrix, averaged
    (``SPM/metric.py``); for a binary matrix also ``iou_bg`` and ``iou_fg``."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    out = {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")}
    if len(iou) == 2:
        out["iou_bg"], out["iou_fg"] = float(iou[0]), float(iou[1])
    return out


def pooled_binary_scores(matrix: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and F1 of a binary confusion matrix pooled over a whole dataset: what a
    Keras ``accuracy`` metric or ``sklearn.metrics.f1_score`` on every flattened test pixel
    reports (the spatial-attention U-Net reference's style). Per-image ``accuracy``/``f1`` weigh
    every image alike instead; pooled ones weigh large images and large polyps more."""
    (tn, fp), (fn, tp) = matrix.astype(np.float64)
    total, positives = tn + fp + fn + tp, 2 * tp + fp + fn
    return {
        "accuracy_pooled": float((tp + tn) / total) if total else float("nan"),
        "f1_pooled": float(2 * tp / positives) if positives else float("nan"),
    }


def kaggle_dice(pred: np.ndarray, target: np.ndarray, num_classes: int = 3) -> float:
    """The BKAI-IGH NeoPolyp Kaggle score of one image: the mean over the foreground classes
    ``1 .. num_classes - 1`` of ``2·|X∩Y| / (|X| + |Y|)``, ``X`` and ``Y`` the predicted and true
    pixels of the class, and ``1`` where both are empty. A dataset's score is the mean over its
    images (every image has ``num_classes - 1`` rows, so this equals the mean over rows).

    Definition: the competition scores a submission by the mean Dice coefficient
    (kaggle.com/competitions/bkai-igh-neopolyp, "Evaluation"; quoted in participants' READMEs,
    e.g. pervin0527/SemanticSegmentation) over the rows of its CSV, one run-length-encoded mask
    per image and class (``<id>_0`` neoplastic, ``<id>_1`` non-neoplastic,
    :mod:`colonseg.data.rle`), with Kaggle's convention for its Dice metric that two empty masks
    score 1 (as Kaggle's other mean-Dice competitions state it, e.g. Ultrasound Nerve
    Segmentation). The overview page itself could not be retrieved here, so the per-row mean and
    the empty rule are Kaggle's standard, not quoted from that page. Unlike the pooled
    ``dice_neo``/``dice_non``, a class absent from an image and not predicted there scores 1:
    frames with one class (95 % of BKAI) reward predicting nothing of the other class.

    Args:
        pred: predicted class map ``(H, W)``, 0 background.
        target: true class map ``(H, W)``.
        num_classes: classes including background (3 for NeoPolyp).

    Example:
        >>> kaggle_dice(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]]))  # (2/3 + 1) / 2
        0.8333333333333333
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    scores = []
    for k in range(1, num_classes):
        p, t = pred == k, target == k
        total = int(p.sum()) + int(t.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((p & t).sum()) / total)
    return float(np.mean(scores))

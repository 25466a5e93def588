"""Benchmark metrics: per-image binary metrics, the PraNet toolbox mDice, HD95, SOD metrics and
pooled multi-class Dice/IoU, MSSG's mIoU and the GlaS object-level metrics."""

from __future__ import annotations

from colonseg.metrics.aupro import AUPROMeter
from colonseg.metrics.auroc import AUROCMeter
from colonseg.metrics.functional import (
    binary_metrics,
    compute_dice,
    confusion,
    hd95,
    mean_dice_256,
)
from colonseg.metrics.glas import ObjectMeter, object_scores
from colonseg.metrics.multiclass import (
    ConfusionMeter,
    kaggle_dice,
    mean_iou,
    pooled_binary_scores,
    scores_from_matrix,
)
from colonseg.metrics.sod import SODMeter

__all__ = [
    "AUPROMeter",
    "AUROCMeter",
    "ConfusionMeter",
    "ObjectMeter",
    "SODMeter",
    "binary_metrics",
    "compute_dice",
    "confusion",
    "hd95",
    "kaggle_dice",
    "mean_dice_256",
    "mean_iou",
    "pooled_binary_scores",
    "object_scores",
    "scores_from_matrix",
]

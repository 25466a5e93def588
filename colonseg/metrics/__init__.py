"""Benchmark metrics: per-image binary metrics, the PraNet toolbox mDice, HD95, and SOD metrics."""

from __future__ import annotations

from colonseg.metrics.functional import binary_metrics, confusion, hd95, mean_dice_256
from colonseg.metrics.sod import SODMeter

__all__ = ["SODMeter", "binary_metrics", "confusion", "hd95", "mean_dice_256"]

"""Pixel-level AUROC over a whole dataset, in constant memory.

Probabilities are binned (``bins`` equal bins on [0, 1]); positives' and negatives' histograms
accumulate over images and the area under the ROC curve follows from them, ties inside a bin
counting one half — with 10,000 bins this matches the exact rank statistic to ~1e-4 while never
holding the dataset's pixels in memory.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AUROCMeter", "bin_index"]


def bin_index(prob: np.ndarray, bins: int) -> np.ndarray:
    """The bin (of ``bins`` equal bins on [0, 1]) of every score."""
    return np.clip((np.asarray(prob, np.float64) * bins).astype(np.int64), 0, bins - 1)


class AUROCMeter:
    """Accumulates ``update(prob, target)``; ``compute()`` gives the pixel AUROC (NaN when the
    pixels seen are all of one class)."""

    def __init__(self, bins: int = 10_000) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, np.int64)
        self.neg = np.zeros(bins, np.int64)

    def update(self, prob: np.ndarray, target: np.ndarray) -> None:
        idx = bin_index(prob, self.bins)
        t = np.asarray(target).astype(bool)
        self.pos += np.bincount(idx[t], minlength=self.bins)
        self.neg += np.bincount(idx[~t], minlength=self.bins)

    def compute(self) -> float:
        n_pos, n_neg = self.pos.sum(), self.neg.sum()
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        below = np.concatenate([[0], np.cumsum(self.neg)[:-1]])  # negatives in lower bins
        wins = (self.pos * below).sum() + 0.5 * (self.pos * self.neg).sum()
        return float(wins / (n_pos * n_neg))

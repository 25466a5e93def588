"""AUPRO: the area under the per-region-overlap curve up to a false-positive rate of 0.3
(Bergmann et al., MVTec AD, IJCV 2021), normalised to [0, 1], in constant memory.

Every connected region of the ground truth (4-connected, as the MVTec reference labels them)
counts once, whatever its size: at a threshold, its overlap is the share of its pixels above the
threshold, and PRO is the mean overlap over all regions of the dataset. The false-positive rate
is over every background pixel. Scores are binned as for the pixel AUROC
(:func:`colonseg.metrics.auroc.bin_index`: 2^14 log-spaced bins per octave of the float32 score)
so images stream through: each region adds its histogram divided by its size, the background adds
its histogram, and the curve follows from reversed cumulative sums. The curve is exact at every
bin edge; ``benchmarks/auroc_exactness.py`` measures the difference from the exact curve.
"""

from __future__ import annotations

import cv2
import numpy as np

from colonseg.metrics.auroc import N_BINS, bin_index

__all__ = ["AUPROMeter"]


class AUPROMeter:
    """Accumulates ``update(prob, target)``; ``compute()`` gives the AUPRO up to ``max_fpr``
    (NaN when no region or no background pixel was seen)."""

    def __init__(self, max_fpr: float = 0.3) -> None:
        self.max_fpr = max_fpr
        self.overlap = np.zeros(N_BINS)  # Σ over regions of (region histogram / region size)
        self.regions = 0
        self.neg = np.zeros(N_BINS, np.int64)

    def update(self, prob: np.ndarray, target: np.ndarray) -> None:
        idx = bin_index(prob)
        t = np.asarray(target).astype(np.uint8) > 0
        self.neg += np.bincount(idx[~t], minlength=N_BINS)
        n, labels = cv2.connectedComponents(t.astype(np.uint8), connectivity=4)
        for region in range(1, n):
            inside = idx[labels == region]
            self.overlap += np.bincount(inside, minlength=N_BINS) / len(inside)
        self.regions += n - 1

    def compute(self) -> float:
        n_neg = self.neg.sum()
        if self.regions == 0 or n_neg == 0:
            return float("nan")
        # thresholds from high to low: pixels in bins >= b are called positive
        pro = np.concatenate([[0.0], np.cumsum(self.overlap[::-1]) / self.regions])
        fpr = np.concatenate([[0.0], np.cumsum(self.neg[::-1]) / n_neg])
        keep = fpr <= self.max_fpr
        x, y = fpr[keep], pro[keep]
        if x[-1] < self.max_fpr:  # close the curve at max_fpr, interpolating the next step
            j = int(keep.sum())
            x = np.append(x, self.max_fpr)
            y = np.append(y, np.interp(self.max_fpr, fpr[j - 1 : j + 1], pro[j - 1 : j + 1]))
        return float(np.trapezoid(y, x) / self.max_fpr)

"""Pixel-level AUROC over a whole dataset, in constant memory, with a stated error.

Scores in [0, 1] are binned by the top bits of their float32 pattern, which orders non-negative
floats: each octave (``[2^-k, 2^-k+1)``) gets ``2^14`` bins, so a bin is at most 6.1e-5 of its
scores wide, relative — small and large probabilities are resolved alike (anomaly maps that
stay near 0 included). Positives' and negatives' histograms accumulate over images. Pairs of a
positive and a negative in different bins are ordered exactly; pairs in one bin count one half,
as ties do in the exact rank statistic. :meth:`AUROCMeter.error_bound` is the largest error that
can cause: half the share of positive-negative pairs sharing a bin (bins that hold a single
value, 0 and 1, excluded: their pairs are true ties).
"""

from __future__ import annotations

import numpy as np

__all__ = ["AUROCMeter", "N_BINS", "bin_index", "tie_bins"]

_SHIFT = 9  # float32 has 23 mantissa bits; 14 are kept
N_BINS = (int(np.float32(1.0).view(np.uint32)) >> _SHIFT) + 1


def bin_index(prob: np.ndarray) -> np.ndarray:
    """The bin of every score (clipped to [0, 1]), ordered as the scores are."""
    x = np.clip(np.asarray(prob, np.float32), 0.0, 1.0)
    return (np.ascontiguousarray(x).view(np.uint32) >> _SHIFT).astype(np.int64)


def tie_bins() -> np.ndarray:
    """Bins that hold a single score (0 and 1): pairs in them are true ties."""
    return np.array([0, N_BINS - 1])


class AUROCMeter:
    """Accumulates ``update(prob, target)``; ``compute()`` gives the pixel AUROC (NaN when the
    pixels seen are all of one class) and ``error_bound()`` its largest possible error."""

    def __init__(self) -> None:
        self.pos = np.zeros(N_BINS, np.int64)
        self.neg = np.zeros(N_BINS, np.int64)

    def update(self, prob: np.ndarray, target: np.ndarray) -> None:
        idx = bin_index(prob)
        t = np.asarray(target).astype(bool)
        self.pos += np.bincount(idx[t], minlength=N_BINS)
        self.neg += np.bincount(idx[~t], minlength=N_BINS)

    def compute(self) -> float:
        n_pos, n_neg = self.pos.sum(), self.neg.sum()
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        below = np.concatenate([[0], np.cumsum(self.neg)[:-1]])  # negatives in lower bins
        wins = (self.pos * below).sum() + 0.5 * (self.pos * self.neg).sum()
        return float(wins / (n_pos * n_neg))

    def error_bound(self) -> float:
        """The largest difference from the exact AUROC: pairs inside one bin, counted one half
        here, could all be wins or all be losses."""
        n_pos, n_neg = self.pos.sum(), self.neg.sum()
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        shared = self.pos.astype(np.float64) * self.neg
        shared[tie_bins()] = 0.0
        return float(0.5 * shared.sum() / (float(n_pos) * n_neg))

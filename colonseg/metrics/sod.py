"""Salient-object metrics (S-measure, E-measure, weighted F-measure, MAE) through pysodmetrics.

Example:
    >>> sod = SODMeter()
    >>> per_image = sod.update(prob, mask)     # {"s_measure", "e_measure_mean", "wfm", "mae"}
    >>> sod.compute()                          # dataset-level values as the toolbox defines them
"""

from __future__ import annotations

import numpy as np
import py_sod_metrics as sodm

__all__ = ["SODMeter"]


class SODMeter:
    """Accumulates pysodmetrics over images; reports per-image and dataset values.

    Sα (Fan et al., ICCV 2017), Eφ (Fan et al., IJCAI 2018), Fβw (Margolin et al., CVPR 2014), MAE.
    Maps are scaled to uint8 (0..255) as the toolboxes expect.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._s, self._e = sodm.Smeasure(), sodm.Emeasure()
        self._w, self._m = sodm.WeightedFmeasure(), sodm.MAE()

    def update(self, prob: np.ndarray, target: np.ndarray) -> dict[str, float]:
        pred = np.clip(np.round(np.asarray(prob, np.float64) * 255), 0, 255).astype(np.uint8)
        gt = target.astype(bool).astype(np.uint8) * 255
        for meter in (self._s, self._e, self._w, self._m):
            meter.step(pred=pred, gt=gt)
        return {
            "s_measure": float(self._s.sms[-1]),
            "e_measure_mean": float(np.mean(self._e.changeable_ems[-1])),
            "wfm": float(self._w.weighted_fms[-1]),
            "mae": float(self._m.maes[-1]),
        }

    def compute(self) -> dict[str, float]:
        curve = self._e.get_results()["em"]["curve"]
        return {
            "s_measure": float(self._s.get_results()["sm"]),
            "e_measure_mean": float(np.mean(curve)),
            "e_measure_max": float(np.max(curve)),
            "wfm": float(self._w.get_results()["wfm"]),
            "mae": float(self._m.get_results()["mae"]),
        }

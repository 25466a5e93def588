"""GlaS challenge object-level metrics (Sirinukunwattana et al., MedIA 2017).

Objects are the instances of the annotation (GlaS masks hold 1..k per gland) and the connected
components (8-connectivity) of a predicted mask.

- **Object F1**: a predicted object is a true positive when it covers more than 50 % of the
  ground-truth gland it overlaps most (each gland matched once); the rest are false positives,
  unmatched glands false negatives. Counts are pooled over a dataset (``ObjectMeter``).
- **Object Dice** and **object Hausdorff**:
  ``½ [Σ_i γ_i D(G_i, S*(G_i)) + Σ_j σ_j D(G*(S_j), S_j)]`` with ``γ``/``σ`` each object's
  share of the total truth/predicted area and ``S*(G)`` the
  predicted object overlapping ``G`` most (for Hausdorff, the nearest one when none overlaps);
  per image, averaged over the images of a dataset.

Example:
    >>> meter = ObjectMeter()
    >>> meter.update(pred_mask, instance_labels)   # per-image object Dice and Hausdorff
    >>> meter.compute()            # {"object_f1", "object_dice", "object_hausdorff"}
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial.distance import directed_hausdorff

__all__ = ["ObjectMeter", "object_scores"]


def _objects(labels: np.ndarray) -> list[np.ndarray]:
    return [labels == v for v in np.unique(labels) if v != 0]


def _components(mask: np.ndarray) -> list[np.ndarray]:
    count, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [comp == v for v in range(1, count)]


def _outline(obj: np.ndarray) -> np.ndarray:
    found, _ = cv2.findContours(obj.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return np.concatenate([c[:, 0, :] for c in found]).astype(np.float64)


def _hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = _outline(a), _outline(b)
    return max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _one_side(
    these: list[np.ndarray], those: list[np.ndarray], overlap: np.ndarray, diagonal: float
) -> tuple[float, float]:
    """Area-weighted Dice and Hausdorff of each of ``these`` against its best match in
    ``those`` (``overlap[i, j]``: pixels shared by ``these[i]`` and ``those[j]``)."""
    areas = np.array([o.sum() for o in these], np.float64)
    weights = areas / areas.sum()
    dice = haus = 0.0
    for i, obj in enumerate(these):
        if overlap.shape[1] and overlap[i].max() > 0:
            match = those[int(overlap[i].argmax())]
            dice += weights[i] * _dice(obj, match)
            haus += weights[i] * _hausdorff(obj, match)
        elif those:  # no overlap: Dice 0, Hausdorff to the nearest object
            haus += weights[i] * min(_hausdorff(obj, other) for other in those)
        else:
            haus += weights[i] * diagonal
    return dice, haus


def object_scores(pred: np.ndarray, instances: np.ndarray) -> dict[str, float]:
    """Object Dice, object Hausdorff and the F1 counts (``tp``, ``fp``, ``fn``) of one image."""
    truth, segs = _objects(instances), _components(pred)
    diagonal = float(np.hypot(*pred.shape))
    if not truth and not segs:
        return {"object_dice": 1.0, "object_hausdorff": 0.0, "tp": 0, "fp": 0, "fn": 0}
    if not truth or not segs:
        return {"object_dice": 0.0, "object_hausdorff": diagonal, "tp": 0,
                "fp": len(segs), "fn": len(truth)}  # fmt: skip
    overlap = np.array([[int((g & s).sum()) for s in segs] for g in truth], np.int64)
    matched, tp = set(), 0
    for j in range(len(segs)):
        i = int(overlap[:, j].argmax())
        if overlap[i, j] > 0.5 * truth[i].sum() and i not in matched:
            matched.add(i)
            tp += 1
    d_truth, h_truth = _one_side(truth, segs, overlap, diagonal)
    d_seg, h_seg = _one_side(segs, truth, overlap.T, diagonal)
    return {
        "object_dice": 0.5 * (d_truth + d_seg),
        "object_hausdorff": 0.5 * (h_truth + h_seg),
        "tp": tp,
        "fp": len(segs) - tp,
        "fn": len(truth) - tp,
    }


class ObjectMeter:
    """Pools the F1 counts over a dataset and averages object Dice and Hausdorff over images."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0
        self.dice: list[float] = []
        self.hausdorff: list[float] = []

    def update(self, pred: np.ndarray, instances: np.ndarray) -> dict[str, float]:
        """Add one image; return its ``object_dice`` and ``object_hausdorff``."""
        s = object_scores(pred, instances)
        self.tp, self.fp, self.fn = self.tp + s["tp"], self.fp + s["fp"], self.fn + s["fn"]
        self.dice.append(s["object_dice"])
        self.hausdorff.append(s["object_hausdorff"])
        return {"object_dice": s["object_dice"], "object_hausdorff": s["object_hausdorff"]}

    def compute(self) -> dict[str, float]:
        den = 2 * self.tp + self.fp + self.fn
        return {
            "object_f1": 2 * self.tp / den if den else float("nan"),
            "object_dice": float(np.mean(self.dice)) if self.dice else float("nan"),
            "object_hausdorff": float(np.mean(self.hausdorff)) if self.hausdorff else float("nan"),
        }

"""How far the streamed pixel AUROC and AUPRO of ``colonseg evaluate`` are from the exact ones.

Runs a model over a labelled set as ``evaluate`` does (its probabilities, its ground truth),
keeps every pixel, and computes the exact pixel AUROC (the rank statistic, ties one half) and the
exact AUPRO (the PRO/FPR curve at every distinct score, up to FPR 0.3), beside the binned meters
and their stated error bound.

Run: .venv/bin/python benchmarks/auroc_exactness.py --model mapseg_polyp \
         --data ../shared/datasets/kvasir-seg --split pranet_test
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
from scipy.stats import rankdata

from colonseg.data.io import read_image
from colonseg.data.labels import read_label
from colonseg.data.layouts import find_pairs
from colonseg.engine.predict import Predictor
from colonseg.metrics import AUPROMeter, AUROCMeter


def exact_auroc(scores: np.ndarray, target: np.ndarray) -> float:
    ranks = rankdata(scores)  # ties get their mean rank: one half per tied pair
    n_pos = int(target.sum())
    n_neg = target.size - n_pos
    return float((ranks[target].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def exact_aupro(scores: np.ndarray, weight: np.ndarray, negative: np.ndarray, max_fpr=0.3):
    """``weight``: 1 / (region size · number of regions) on region pixels, else 0."""
    order = np.argsort(-scores, kind="stable")
    s, w, n = scores[order], weight[order], negative[order]
    last = np.r_[s[1:] != s[:-1], True]  # the curve moves only after a run of equal scores
    pro = np.r_[0.0, np.cumsum(w)[last]]
    fpr = np.r_[0.0, np.cumsum(n)[last] / n.sum()]
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:
        j = int(keep.sum())
        x = np.append(x, max_fpr)
        y = np.append(y, np.interp(max_fpr, fpr[j - 1 : j + 1], pro[j - 1 : j + 1]))
    return float(np.trapezoid(y, x) / max_fpr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mapseg_polyp")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default=None)
    args = parser.parse_args()
    predictor = Predictor.from_pretrained(args.model)
    auroc, aupro = AUROCMeter(), AUPROMeter()
    scores, targets, regions = [], [], []
    n_regions = 0
    for pair in find_pairs(args.data, split=args.split):
        prob = predictor.predict(read_image(pair.image)).prob
        target = (read_label(pair.mask, predictor.scheme) > 0).astype(np.uint8)
        auroc.update(prob, target)
        aupro.update(prob, target)
        n, labels = cv2.connectedComponents(target, connectivity=4)
        sizes = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
        inv = np.where(labels > 0, 1.0 / sizes[labels], 0.0)
        scores.append(prob.astype(np.float32).ravel())
        targets.append(target.ravel().astype(bool))
        regions.append(inv.ravel())
        n_regions += n - 1
    s, t = np.concatenate(scores), np.concatenate(targets)
    result = {
        "model": args.model,
        "data": f"{args.data}:{args.split}",
        "pixels": int(s.size),
        "pixel_auroc_binned": auroc.compute(),
        "pixel_auroc_exact": exact_auroc(s, t),
        "pixel_auroc_error_bound": auroc.error_bound(),
        "aupro_binned": aupro.compute(),
        "aupro_exact": exact_aupro(s, np.concatenate(regions) / n_regions, ~t),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

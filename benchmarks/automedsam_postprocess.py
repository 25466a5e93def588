"""Choose Automatic MedSAM's post-processing from boxes only.

Run: .venv/bin/python benchmarks/automedsam_postprocess.py runs/polyp_automedsam
For each post-processing spec, on the run's held-out training boxes (the same 10 % the epoch was
chosen on, from the run's config.yaml and cached embeddings): the box IoU of the predicted regions
(the selection rule: needs no mask) and, for information only, Dice against the masks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from colonseg.data.cache import default_cache_dir
from colonseg.data.layouts import hold_out
from colonseg.engine.checkpoint import load_pretrained
from colonseg.engine.config import load_config
from colonseg.methods.medsam_box.cache import EmbeddingCache
from colonseg.methods.medsam_box.data import read_sample_mask
from colonseg.methods.medsam_box.method import _samples
from colonseg.methods.medsam_box.module import GRID, region_box_iou, to_grid
from colonseg.metrics import compute_dice
from colonseg.postprocess import PostProcess

SPECS = (
    "none", "keep_largest", "fill_holes,keep_largest", "fill_holes,min_area=0.005",
    "fill_holes,min_area=0.01", "fill_holes,min_area=0.02", "fill_holes,min_area=0.04",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, help="a medsam_box run folder (config.yaml, model/)")
    args = parser.parse_args()
    cfg = load_config(args.run / "config.yaml")  # older run folders load through the aliases
    net, _ = load_pretrained(args.run / "model")
    cache = EmbeddingCache(cfg.data.cache_dir or default_cache_dir() / "medsam", net)
    train = [x for v in _samples(cfg.data.train, cfg.data.boxes).values() for x in v]
    _, held = hold_out(train, cfg.data.val_fraction, cfg.seed)
    scores: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in SPECS}
    for sample in held:
        mask = read_sample_mask(sample)
        h, w = sample.shape
        with torch.no_grad():
            logits = net.decode(cache.load(sample)[None].float())
        prob = cv2.resize(logits.sigmoid()[0, 0].numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
        raw = (prob >= 0.5).astype(np.uint8)
        grid = torch.from_numpy(to_grid(sample.boxes, (h, w)))
        for spec in SPECS:
            post = PostProcess.parse(spec)
            pred = post(prob, raw, None)[0] if post else raw
            small = cv2.resize(pred, (GRID, GRID), interpolation=cv2.INTER_NEAREST)
            iou = region_box_iou(torch.from_numpy(small)[None, None].float(), [grid])
            scores[spec][0].append(float(iou[0]))
            scores[spec][1].append(compute_dice(pred, mask) if mask is not None else np.nan)
    print(f"{len(held)} held-out training frames\n| post-processing | box IoU | Dice (info) |")
    print("|---|---:|---:|")
    for spec, (iou, dice) in scores.items():
        print(f"| `{spec}` | {np.mean(iou):.4f} | {np.nanmean(dice):.4f} |")


if __name__ == "__main__":
    main()

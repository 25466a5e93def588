"""Copy a trained checkpoint into the package zoo (colonseg/weights/<name>/), in fp16.

Run: .venv/bin/python scripts/ship_model.py runs/<run>/model <name> --summary eval/summary.json
The zoo copy keeps the run's config.json, replaces its metrics by the `colonseg evaluate` summary
(dice, iou, mdice_256, s_measure per dataset), and stores the weights in fp16 (half the size).
It then checks that the fp16 copy predicts what the fp32 original predicts on the bundled samples
and refuses to ship when their mean Dice differs by more than --max-dice-drop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from colonseg.data.io import read_image, read_mask
from colonseg.data.layouts import folder_layout
from colonseg.engine.checkpoint import ZOO_DIR, load_pretrained, save_pretrained
from colonseg.engine.demo import SAMPLES_DIR
from colonseg.engine.predict import Predictor
from colonseg.metrics.functional import binary_metrics

KEPT = ("dice", "iou", "mdice_256", "s_measure")


def mean_sample_dice(predictor: Predictor) -> float:
    scores = [
        binary_metrics(predictor.predict(read_image(p.image)).mask, read_mask(p.mask))["dice"]
        for p in folder_layout(SAMPLES_DIR)
    ]
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="checkpoint folder (runs/<run>/model)")
    parser.add_argument("name", help="zoo name, e.g. default")
    parser.add_argument("--summary", type=Path, required=True, help="evaluate's summary.json")
    parser.add_argument("--max-dice-drop", type=float, default=0.002)
    args = parser.parse_args()

    net, meta = load_pretrained(args.model)
    summary = json.loads(args.summary.read_text())
    meta.metrics = {
        f"{dataset.split(':')[0]}/{key}": round(float(row[key]), 4)
        for dataset, row in summary.items()
        for key in KEPT
    }
    meta.provenance["evaluation"] = {"summary": str(args.summary), "datasets": list(summary)}
    target = ZOO_DIR / args.name
    save_pretrained(net, meta, target, half=True)

    full = mean_sample_dice(Predictor(*load_pretrained(args.model)))
    half = mean_sample_dice(Predictor(*load_pretrained(target)))
    print(f"bundled samples mean Dice: fp32 {full:.4f}, fp16 zoo copy {half:.4f}")
    if full - half > args.max_dice_drop:
        raise SystemExit(f"error: fp16 costs {full - half:.4f} Dice (> {args.max_dice_drop})")
    size = (target / "weights.safetensors").stat().st_size / 2**20
    print(f"shipped {args.model} as '{args.name}' ({size:.1f} MiB) in {target}")


if __name__ == "__main__":
    main()

"""What the faster SPM settings cost in proposal quality (issue 8).

Runs SPM with each setting on the same GlaS training images and reports the proposals' mIoU
(MSSG's: background and gland IoU pooled over the images, averaged) and gland IoU against the
annotations — read here to measure, never to train — with the seconds per image on this machine.

Run: .venv/bin/python benchmarks/mssg_spm_settings.py --n 10 \
        --setting scale=0.5,channels=32 --setting scale=1,channels=128
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from colonseg.data.io import read_image, read_mask
from colonseg.data.layouts import find_pairs
from colonseg.methods.mssg.spm import SpmSettings, propose
from colonseg.metrics import ConfusionMeter, mean_iou


def parse_setting(text: str) -> SpmSettings:
    fields = {
        k: float(v) if "." in v else int(v) for k, v in (kv.split("=") for kv in text.split(","))
    }
    return SpmSettings(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/datasets/glas")
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=10, help="images, evenly spaced over the split")
    parser.add_argument("--setting", action="append", required=True)
    args = parser.parse_args()
    pairs = find_pairs(args.data, split=args.split)
    picks = [pairs[i] for i in np.linspace(0, len(pairs) - 1, args.n).round().astype(int)]
    images = [(read_image(p.image), read_mask(p.mask)) for p in picks]
    for text in args.setting:
        settings = parse_setting(text)
        meter, seconds = ConfusionMeter(2), []
        for image, truth in images:
            start = time.perf_counter()
            proposal = propose(image, settings).proposal
            seconds.append(time.perf_counter() - start)
            meter.update(proposal > 0, truth)
        scores = mean_iou(meter.matrix)
        row = {
            "setting": text,
            "n": len(images),
            "miou": round(scores["miou"], 4),
            "iou_gland": round(scores["iou_fg"], 4),
            "s_per_image": round(float(np.mean(seconds)), 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

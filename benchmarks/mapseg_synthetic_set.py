"""Write MAPSeg's label-free validation set as an image/mask folder that `colonseg evaluate` reads.

The frames are the held-out normal frames of a MAPSeg config (the share its training never
sees), each with the SIMPO lesion the config's validation pastes into it (same seed, same
lesion), at the training resolution. Scoring a model or a post-processing on it uses no polyp
image and no polyp label, so it may choose between settings where the test sets may not.

Run:
    .venv/bin/python benchmarks/mapseg_synthetic_set.py --out eval/synthetic_set
    .venv/bin/colonseg evaluate --model mapseg_polyp --data eval/synthetic_set \
        --out eval/synthetic_mapseg [--postprocess SPEC]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from colonseg.data.field_of_view import valid_area
from colonseg.engine.config import load_config
from colonseg.methods.mapseg.data import (
    load_frames,
    simpo_from_config,
    split_normal_frames,
    split_seed,
)

CONFIG = Path(__file__).resolve().parents[1] / "colonseg" / "configs" / "mapseg" / "polyp.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write images/, masks/")
    parser.add_argument("--config", default=str(CONFIG), help="MAPSeg config (its held-out share)")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY.sub=value")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    seed, files = split_seed(cfg), split_normal_frames(cfg)[1]
    simpo = simpo_from_config(cfg)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    frames = load_frames(files, cfg.data.image_size)
    for i, (f, frame) in enumerate(zip(files, frames, strict=True)):
        # as the training's validation set, NormalFrames(force=True, seed=seed), builds sample i
        rng = np.random.default_rng([seed, i])
        image, mask = simpo(frame, rng, force=True, area=valid_area(frame))
        cv2.imwrite(str(args.out / "images" / f"{f.stem}.png"), image[..., ::-1])
        cv2.imwrite(str(args.out / "masks" / f"{f.stem}.png"), (mask > 0).astype(np.uint8) * 255)
    print(f"{len(files)} frames with lesions → {args.out}")


if __name__ == "__main__":
    main()

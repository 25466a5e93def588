"""Why the non-neoplastic class fails on BKAI-IGH NeoPolyp: class balance, resolution, outcomes.

Run (CPU; a few minutes per model):
    .venv/bin/python benchmarks/neopolyp_nonneo.py --models neopolyp_unet_lite0 \
        --out runs/nonneo.json

Three measurements, each answering one suspect:
- **balance**: images holding each class and each class's share of the polyp pixels, train and
  test split (from the masks alone);
- **resolution**: the ceiling a model working at S x S pays before it learns anything — the test
  masks resized to S x S the way training resizes them (``resize_labels``) and back to full size
  (nearest), scored with the pooled ``dice_neo`` / ``dice_non``;
- **outcomes** per model: every connected non-neoplastic (and neoplastic) region of the test
  masks, by size (share of the image), and what the model calls its pixels — background
  (missed), the other polyp class (confused) or its own class — with the model's default
  post-processing off;
- **prior shift** per model: is the class a matter of calibration? Each polyp pixel's
  non-neoplastic probability multiplied by ``w`` before the neoplastic / non-neoplastic
  decision (``--weights``; the polyp mask does not change): ``w = 7`` is logit adjustment
  (Menon et al., ICLR 2021) with τ = 1 for the 7 : 1 pixel ratio of the training split, no
  training needed. Pooled ``dice_neo`` / ``dice_non`` per ``w``.

Results go to ``--out`` (JSON) and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from colonseg.data.cache import resize_labels
from colonseg.data.io import read_image, write_atomic
from colonseg.data.labels import get_scheme, read_label
from colonseg.data.layouts import find_pairs
from colonseg.engine.predict import Predictor
from colonseg.metrics import ConfusionMeter

ROOT = Path(
    os.environ.get("COLONSEG_DATA", Path(__file__).resolve().parents[2] / "shared/datasets")
)
NAMES = {1: "neoplastic", 2: "non-neoplastic"}
SIZES = [(0.0, 0.01, "< 1 %"), (0.01, 0.05, "1-5 %"), (0.05, 1.01, "> 5 %")]


def balance(masks: list[np.ndarray]) -> dict:
    pixels = np.array([[np.count_nonzero(m == c) for c in (1, 2)] for m in masks], dtype=float)
    images = {NAMES[c]: int(np.count_nonzero(pixels[:, c - 1])) for c in (1, 2)}
    images["both"] = int(np.count_nonzero(pixels.min(1)))
    share = pixels.sum(0) / max(pixels.sum(), 1)
    return {"images": images, "pixel_share": {NAMES[c]: float(share[c - 1]) for c in (1, 2)}}


def resolution_ceiling(masks: list[np.ndarray], size: int) -> dict:
    meter = ConfusionMeter(3)
    for m in masks:
        small = resize_labels(m, (size, size), 3)
        back = cv2.resize(small, (m.shape[1], m.shape[0]), interpolation=cv2.INTER_NEAREST)
        meter.update(back, m)
    return meter.class_scores(("bg", "neo", "non"))


def outcomes(model: str, pairs: list, masks: list[np.ndarray]) -> list[dict]:
    """One row per ground-truth polyp region: class, size share, predicted pixel shares."""
    predictor = Predictor.from_pretrained(model, device="cpu", postprocess="none")
    rows = []
    for pair, truth in tqdm(list(zip(pairs, masks, strict=True)), desc=model, leave=False):
        classes = predictor.predict(read_image(pair.image)).classes
        for c in (1, 2):
            count, labels = cv2.connectedComponents((truth == c).astype(np.uint8), connectivity=8)
            for r in range(1, count):
                region = labels == r
                called = np.bincount(classes[region].ravel(), minlength=3) / region.sum()
                rows.append({"image": pair.image.name, "cls": c,
                             "share": float(region.mean()),
                             "background": float(called[0]), "same": float(called[c]),
                             "other": float(called[3 - c])})  # fmt: skip
    return rows


def prior_shift(model: str, pairs: list, masks: list[np.ndarray], weights: list[float]) -> dict:
    """Pooled scores with the non-neoplastic probability multiplied by each of ``weights``."""
    predictor = Predictor.from_pretrained(model, device="cpu", postprocess="none")
    meters = {w: ConfusionMeter(3) for w in weights}
    for pair, truth in tqdm(list(zip(pairs, masks, strict=True)), desc=model, leave=False):
        image = read_image(pair.image)
        probs = predictor.predict_torch(predictor.preprocess([image]))[0].cpu().numpy()
        for w, meter in meters.items():
            shifted = probs.copy()
            shifted[2] *= w
            meter.update(predictor.finish(shifted, image).classes, truth)
    return {str(w): m.class_scores(("bg", "neo", "non")) for w, m in meters.items()}


def outcome_table(rows: list[dict]) -> list[dict]:
    """Pixel-weighted outcome shares per class and size bucket."""
    table = []
    for c in (1, 2):
        for lo, hi, label in SIZES:
            sel = [r for r in rows if r["cls"] == c and lo <= r["share"] < hi]
            w = np.array([r["share"] for r in sel])
            if not sel:
                continue

            def mean(key: str, sel=sel, w=w) -> float:
                return float(np.average([r[key] for r in sel], weights=w))

            table.append({"class": NAMES[c], "size": label, "regions": len(sel),
                          "pixels_of_class": float(w.sum()),
                          "correct": mean("same"), "missed": mean("background"),
                          "confused": mean("other")})  # fmt: skip
    totals = {
        c: sum(t["pixels_of_class"] for t in table if t["class"] == c) for c in NAMES.values()
    }
    for t in table:
        t["pixels_of_class"] /= totals[t["class"]]
    return table


def save(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["neopolyp_unet_lite0"])
    ap.add_argument("--sizes", nargs="*", type=int, default=[256, 352, 512])
    ap.add_argument("--weights", nargs="*", type=float, default=[1, 1.5, 2, 3, 4, 7])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/nonneo.json"))
    args = ap.parse_args()
    scheme = get_scheme("neopolyp")
    root = ROOT / "bkai-neopolyp"
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    test = find_pairs(root, split="test")[: args.limit]
    test_masks = [read_label(p.mask, scheme) for p in tqdm(test, desc="test masks", leave=False)]
    if "balance" not in result:
        train = find_pairs(root, split="train")[: args.limit]
        train_masks = (read_label(p.mask, scheme) for p in tqdm(train, desc="train masks"))
        result["balance"] = {"train": balance(list(train_masks)), "test": balance(test_masks)}
    for size in args.sizes:
        key = f"resolution_{size}"
        if key not in result:
            result[key] = resolution_ceiling(test_masks, size)
    for model in args.models:
        key = f"outcomes:{model}"
        if key not in result:
            result[key] = {"regions": outcomes(model, test, test_masks)}
        result[key]["table"] = outcome_table(result[key]["regions"])
        save(args.out, result)
        key = f"prior:{model}"
        if key not in result:
            result[key] = prior_shift(model, test, test_masks, args.weights)
            save(args.out, result)
    save(args.out, result)

    print("| split | images neo | images non | both | neo pixel share | non pixel share |")
    print("|---|---:|---:|---:|---:|---:|")
    for split, b in result["balance"].items():
        i, s = b["images"], b["pixel_share"]
        print(f"| {split} | {i['neoplastic']} | {i['non-neoplastic']} | {i['both']} | "
              f"{s['neoplastic']:.3f} | {s['non-neoplastic']:.3f} |")  # fmt: skip
    print("\n| masks at | dice_seg | dice_neo | dice_non |\n|---|---:|---:|---:|")
    for size in args.sizes:
        r = result[f"resolution_{size}"]
        print(f"| {size}² | {r['dice_seg']:.4f} | {r['dice_neo']:.4f} | {r['dice_non']:.4f} |")
    for model in args.models:
        print(f"\n`{model}`, test regions by size (pixel-weighted shares of the region):\n")
        print("| class | region size | regions | share of class pixels | correct | missed | "
              "other class |\n|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
        for t in result[f"outcomes:{model}"]["table"]:
            print(f"| {t['class']} | {t['size']} | {t['regions']} | {t['pixels_of_class']:.2f} | "
                  f"{t['correct']:.2f} | {t['missed']:.2f} | {t['confused']:.2f} |")  # fmt: skip
        print(f"\n`{model}`, non-neoplastic probability x w:\n")
        print("| w | dice_seg | dice_neo | dice_non |\n|---:|---:|---:|---:|")
        for w, r in result[f"prior:{model}"].items():
            print(f"| {w} | {r['dice_seg']:.3f} | {r['dice_neo']:.3f} | {r['dice_non']:.3f} |")


if __name__ == "__main__":
    main()

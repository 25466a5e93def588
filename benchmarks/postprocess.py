"""Measure every post-processing step on every shipped model: mean Dice with and without it.

Run (CPU, a few minutes per model):
    .venv/bin/python benchmarks/postprocess.py --out runs/postprocess.json
    .venv/bin/python benchmarks/postprocess.py --models default --datasets kvasir clinicdb

Each model predicts every test image once (its own threshold, no post-processing, default
precision); every variant is then applied to that same prediction. Binary test sets: the Kvasir-SEG
and CVC-ClinicDB PraNet test splits; 3-class: BKAI-IGH NeoPolyp ``splits/test.txt``. Reported per
variant: ``dice`` (per-image Dice of polyp vs background, classes merged, averaged over images)
and, for 3-class models, ``dice_seg``/``dice_neo``/``dice_non`` pooled over all pixels. A binary
model on BKAI is scored on ``dice`` only. Results go to ``--out`` (JSON, merged across runs) and
a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from colonseg.data.io import read_image, write_atomic
from colonseg.data.labels import read_label, scheme_for_masks
from colonseg.data.layouts import find_pairs
from colonseg.engine.checkpoint import list_zoo
from colonseg.engine.predict import Predictor
from colonseg.metrics import ConfusionMeter, binary_metrics
from colonseg.postprocess import PostProcess

ROOT = Path(
    os.environ.get("COLONSEG_DATA", Path(__file__).resolve().parents[2] / "shared/datasets")
)
DATASETS = {
    "kvasir": ("kvasir-seg", "pranet_test"),
    "clinicdb": ("cvc-clinicdb", "pranet_test"),
    "bkai": ("bkai-neopolyp", "test"),
}
VARIANTS = [
    "none",
    "otsu",
    "morphology",
    "fill_holes",
    "min_area=0.001",
    "min_area=0.005",
    "keep_largest",
    "class_vote",
    "fill_holes,min_area=0.005",
    "fill_holes,min_area=0.005,class_vote",
    "morphology,fill_holes,min_area=0.005,class_vote",
]


def score(model: str, dataset: str, limit: int | None = None) -> dict[str, dict[str, float]]:
    """``{variant: {"dice", ["dice_neo", "dice_non"]}}`` of one model on one test set."""
    predictor = Predictor.from_pretrained(model, device="cpu", postprocess="none")
    folder, split = DATASETS[dataset]
    pairs = find_pairs(ROOT / folder, split=split)[:limit]
    scheme = scheme_for_masks(predictor.scheme, [p.mask for p in pairs])
    variants = [v for v in VARIANTS if scheme.multiclass or "class_vote" not in v]
    posts = {v: PostProcess.parse(v) for v in variants}
    dice = {v: [] for v in variants}
    meters = {v: ConfusionMeter(scheme.num_classes) for v in variants}
    for pair in tqdm(pairs, desc=f"{model} on {dataset}", leave=False):
        image, truth = read_image(pair.image), read_label(pair.mask, scheme)
        out = predictor.predict(image)
        for v, post in posts.items():
            mask, classes = (
                (out.mask, out.classes) if not post else post(out.prob, out.mask, out.probs)
            )
            dice[v].append(binary_metrics(mask, truth > 0)["dice"])
            if scheme.multiclass:
                meters[v].update(classes, truth)
    result = {}
    for v in variants:
        result[v] = {"dice": float(np.mean(dice[v])), "n": len(pairs)}
        if scheme.multiclass:
            scores = meters[v].class_scores(scheme.keys)
            result[v].update({k: v2 for k, v2 in scores.items() if k.startswith("dice_")})
    return result


def table(results: dict) -> str:
    lines = [
        "| model | test set | variant | dice | Δ dice | dice_seg | dice_neo | dice_non |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for model, per_set in results.items():
        for dataset, variants in per_set.items():
            base = variants["none"]["dice"]
            for v, r in variants.items():
                pooled = [
                    f"{r[k]:.4f}" if k in r else "" for k in ("dice_seg", "dice_neo", "dice_non")
                ]
                delta = f"{r['dice'] - base:+.4f}" if v != "none" else ""
                lines.append(
                    f"| {model} | {dataset} | `{v}` | {r['dice']:.4f} | {delta} | "
                    + " | ".join(pooled)
                    + " |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="zoo names (default: all)")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=Path("runs/postprocess.json"))
    parser.add_argument("--limit", type=int, default=None, help="first N images (smoke runs)")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for model in args.models or list_zoo():
        for dataset in args.datasets:
            results.setdefault(model, {})[dataset] = score(model, dataset, args.limit)
            text = json.dumps(results, indent=2)
            write_atomic(args.out, lambda tmp, text=text: tmp.write_text(text))
    print(table({m: results[m] for m in args.models or list_zoo() if m in results}))


if __name__ == "__main__":
    main()

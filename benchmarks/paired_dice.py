"""Per-image comparison of two `colonseg evaluate` runs on the same images: mean Dice difference
with a paired bootstrap 95 % interval, and how many images got better / worse by more than 0.01.

Run: .venv/bin/python benchmarks/paired_dice.py eval/A eval/B [eval/C ...] [--metric mdice_256]
Each later run is compared with the first (B − A, C − A, ...), per dataset, on the images both
hold (their ``per_case.csv``).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np


def read_dice(run: Path, metric: str = "dice") -> dict[str, dict[str, float]]:
    """``{dataset: {image id: score}}`` from a run's ``per_case.csv``; ``metric`` is its column
    (``dice``: Dice at the threshold; ``mdice_256``: the PraNet mean over 256 thresholds)."""
    table = run / "per_case.csv"
    if not table.is_file():
        raise SystemExit(f"error: {table}: not found (run `colonseg evaluate --out {run}` first)")
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with table.open() as f:
        for row in csv.DictReader(f):
            out[row["dataset"]][row["id"]] = float(row[metric])
    return out


def bootstrap_means(diff: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` means of ``diff`` resampled over images with replacement."""
    rng = np.random.default_rng(seed)
    return diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)


def paired(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``b - a`` with a percentile bootstrap 95 % interval over images."""
    diff = b - a
    lo, hi = np.percentile(bootstrap_means(diff, n_boot, seed), [2.5, 97.5])
    return {
        "mean": float(diff.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "better": int((diff > 0.01).sum()),
        "worse": int((diff < -0.01).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path, nargs="+", help="evaluate output folders")
    parser.add_argument(
        "--metric",
        choices=("dice", "mdice_256"),
        default="dice",
        help="dice: Dice at the threshold; mdice_256: the PraNet toolbox's mean Dice",
    )
    args = parser.parse_args()
    if len(args.runs) < 2:
        raise SystemExit("error: give at least two evaluate output folders")
    base = read_dice(args.runs[0], args.metric)
    columns = ["run", "dataset", "n", f"mean {args.metric}", "Δ vs first", "95 % CI",
               "better / worse (> 0.01)"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---:|---:|---:|---|---|")
    for run in args.runs[1:]:
        other = read_dice(run, args.metric)
        for dataset, scores in base.items():
            ids = sorted(set(scores) & set(other.get(dataset, {})))
            if not ids:
                continue
            a = np.array([scores[i] for i in ids])
            b = np.array([other[dataset][i] for i in ids])
            s = paired(a, b)
            print(
                f"| {run} | {dataset} | {len(ids)} | {b.mean():.4f} | {s['mean']:+.4f} | "
                f"{s['lo']:+.4f} … {s['hi']:+.4f} | {s['better']} / {s['worse']} |"
            )


if __name__ == "__main__":
    main()

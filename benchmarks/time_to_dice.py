"""Validation Dice against wall-clock training time, from a finished run directory.

Run: .venv/bin/python benchmarks/time_to_dice.py runs/polyp_unet_lite0 [--target 0.85]
     [--dataset kvasir-seg] [--png docs/figures/time_to_dice.png]
Prints a Markdown table (epoch, minutes, val Dice per dataset) and the first time the chosen
dataset's Dice reaches the target; with --png also plots the curves with the target line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_history(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.json"
    history = json.loads(path.read_text()).get("history") if path.is_file() else None
    if not history:
        raise SystemExit(f"error: {path}: no per-epoch history (a finished run with a logger?)")
    return [history[k] for k in sorted(history, key=int)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--dataset", default="kvasir-seg")
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()

    epochs = load_history(args.run_dir)
    keys = sorted({k for e in epochs for k in e if k.startswith("val/dice_")})
    names = [k.removeprefix("val/dice_") for k in keys]
    if args.dataset not in names or any("time/minutes" not in e for e in epochs):
        raise SystemExit(f"error: {args.run_dir}: needs val/dice_{args.dataset} and time/minutes")
    print("| epochs done | minutes | " + " | ".join(f"val Dice {n}" for n in names) + " |")
    print("|---:|---:|" + "---:|" * len(names))
    for i, e in enumerate(epochs):
        cells = " | ".join(f"{e.get(k, float('nan')):.3f}" for k in keys)
        print(f"| {i + 1} | {e['time/minutes']:.1f} | {cells} |")

    target_key = f"val/dice_{args.dataset}"
    reached = [e for e in epochs if e.get(target_key, 0.0) >= args.target]
    if reached:
        first = reached[0]
        print(f"\n{args.dataset} Dice >= {args.target} after {first['time/minutes']:.1f} min")
    else:
        print(f"\n{args.dataset} Dice never reached {args.target}")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        minutes = [e["time/minutes"] for e in epochs]
        for key, name in zip(keys, names, strict=True):
            ax.plot(minutes, [e.get(key) for e in epochs], marker="o", label=name)
        ax.axhline(args.target, color="grey", linestyle="--", label=f"target {args.target}")
        ax.set_xlabel("training time (min, wall clock)")
        ax.set_ylabel("validation Dice (threshold 0.5)")
        ax.set_title(args.run_dir.name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png)
        print(f"figure: {args.png}")


if __name__ == "__main__":
    main()

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
import shutil
import tempfile
from pathlib import Path

from colonseg.engine.checkpoint import ZOO_DIR, load_pretrained, save_pretrained
from colonseg.engine.demo import SAMPLES_DIR
from colonseg.engine.evaluate import EvalSource, run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError

KEPT = ("dice", "iou", "mdice_256", "s_measure")


def sample_dice(model: Path) -> float:
    """Mean Dice on the bundled samples, computed in fp32 whatever the CPU."""
    predictor = Predictor(*load_pretrained(model), device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        sources = [EvalSource(str(SAMPLES_DIR), name="s")]
        summary = run_evaluate(predictor, sources, tmp, progress=False)
    return summary["s"]["dice"]


def ship(args: argparse.Namespace) -> None:
    net, meta = load_pretrained(args.model)
    try:
        summary = json.loads(args.summary.read_text())
        meta.metrics = {
            f"{dataset.split(':')[0]}/{key}": round(float(row[key]), 4)
            for dataset, row in summary.items()
            for key in KEPT
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ColonsegError(f"{args.summary}: not an evaluate summary.json ({exc})") from None
    meta.provenance["evaluation"] = {"summary": str(args.summary), "datasets": list(summary)}
    ZOO_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ZOO_DIR) as tmp:  # nothing lands unless it passes
        staged = save_pretrained(net, meta, Path(tmp) / args.name, half=True)
        full, half = sample_dice(args.model), sample_dice(staged)
        print(f"bundled samples mean Dice: fp32 {full:.4f}, fp16 copy {half:.4f}")
        if full - half > args.max_dice_drop:
            raise ColonsegError(f"fp16 costs {full - half:.4f} Dice (> {args.max_dice_drop})")
        target = ZOO_DIR / args.name
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    size = (target / "weights.safetensors").stat().st_size / 2**20
    print(f"shipped {args.model} as '{args.name}' ({size:.1f} MiB) in {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="checkpoint folder (runs/<run>/model)")
    parser.add_argument("name", help="zoo name, e.g. default")
    parser.add_argument("--summary", type=Path, required=True, help="evaluate's summary.json")
    parser.add_argument("--max-dice-drop", type=float, default=0.002)
    args = parser.parse_args()
    try:
        ship(args)
    except ColonsegError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()

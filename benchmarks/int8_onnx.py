"""int8 ONNX against fp32 ONNX and torch: speed and test-set accuracy of one model, in one run.

Run: .venv/bin/python benchmarks/int8_onnx.py [--model default] [--out runs/int8_onnx] [--limit N]

1. Export ``--model`` to int8 (``colonseg export --quantize int8``), calibrated on
   ``--calibration-images`` frames drawn from the Kvasir-SEG and CVC-ClinicDB ``pranet_train``
   splits (the shipped models' training images), into ``<out>/model.int8.onnx``.
2. Speed: ``Predictor.predict`` one random frame at a time at the model's input size (batch 1,
   whole predictor: resize, normalise, forward, sigmoid, resize back, threshold) for torch (the
   default precision: bf16 autocast where the CPU runs it natively), onnxruntime fp32
   (``--backend onnx``) and onnxruntime int8; ``--rounds`` interleaved rounds, best kept.
3. Accuracy: ``run_evaluate`` of each on the Kvasir-SEG and CVC-ClinicDB ``pranet_test`` splits
   (``--limit``: their first N images) at threshold 0.5: per-image Dice and mDice256, plus the
   per-image Dice change of int8 against onnx fp32 (mean and largest absolute).

Resumable: the int8 file, each speed and each evaluation (``<out>/eval/<backend>/``) is kept and
skipped when present; ``<out>/results.json`` holds the numbers, a Markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

from predictor_speed import measure, random_frames

from colonseg.data.io import write_atomic
from colonseg.data.layouts import read_split
from colonseg.data.sources import DataSource
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.onnx_backend import export_onnx
from colonseg.engine.predict import Predictor

ROOT = Path(
    os.environ.get("COLONSEG_DATA", Path(__file__).resolve().parents[2] / "shared/datasets")
)
DATASETS = ("kvasir-seg", "cvc-clinicdb")
BACKENDS = ("torch", "onnx_fp32", "onnx_int8")


def create_predictor(backend: str, model: str, int8: Path) -> Predictor:
    if backend == "onnx_int8":
        return Predictor.from_pretrained(int8, threshold=0.5)
    onnx = backend == "onnx_fp32"
    return Predictor.from_pretrained(
        model, backend="onnx" if onnx else "torch", device="cpu", threshold=0.5
    )


def pranet_test_sources(out: Path, limit: int | None) -> list[DataSource]:
    """The two PraNet test splits, or the first ``limit`` images of each (as split files)."""
    sources = []
    for name in DATASETS:
        split: str = "pranet_test"
        if limit is not None:
            stems = read_split(ROOT / name, "pranet_test")[:limit]
            path = out / "splits" / f"{name}_pranet_test_first{limit}.txt"
            split = str(write_atomic(path, lambda tmp, s=stems: tmp.write_text("\n".join(s))))
        sources.append(DataSource(str(ROOT / name), split, name=f"{name}:pranet_test"))
    return sources


def dice_change(out: Path) -> dict[str, dict[str, float]]:
    """Per dataset: mean and largest absolute per-image Dice change, int8 against onnx fp32."""

    def read(backend: str) -> dict[tuple[str, str], float]:
        with open(out / "eval" / backend / "per_case.csv") as f:
            return {(r["dataset"], r["id"]): float(r["dice"]) for r in csv.DictReader(f)}

    fp32, int8 = read("onnx_fp32"), read("onnx_int8")
    result = {}
    for name in sorted({d for d, _ in fp32}):
        diffs = [abs(int8[k] - v) for k, v in fp32.items() if k[0] == name]
        result[name] = {"mean": sum(diffs) / len(diffs), "max": max(diffs)}
    return result


def table(results: dict) -> str:
    size = results["size"]
    head = [f"backend | img/s, batch 1, {size}² | file MiB"]
    head += [f"{d} Dice | {d} mDice256" for d in results["datasets"]]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (2 + 2 * len(DATASETS)) + "|"]
    for b in BACKENDS:
        cells = [b, f"{results['speed'].get(b, float('nan')):.1f}"]
        cells.append(f"{results['file_mib'][b]:.1f}" if b in results["file_mib"] else "")
        for d in results["datasets"]:
            stats = results["eval"].get(b, {}).get(d, {})
            cells += [f"{stats.get('dice', float('nan')):.4f}"]
            cells += [f"{stats.get('mdice_256', float('nan')):.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path("runs/int8_onnx"))
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--n", type=int, default=50, help="frames per speed round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved speed rounds")
    parser.add_argument("--limit", type=int, default=None, help="first N test images per set")
    args = parser.parse_args()
    out, record = args.out, args.out / "results.json"
    settings = {"model": args.model, "calibration_images": args.calibration_images,
                "limit": args.limit}  # fmt: skip
    results = json.loads(record.read_text()) if record.is_file() else {**settings}
    if any(results.get(k) != v for k, v in settings.items()):
        raise SystemExit(f"error: {record} was made with other settings; use another --out")
    results.setdefault("speed", {})
    results.setdefault("eval", {})

    def save() -> None:
        write_atomic(record, lambda tmp: tmp.write_text(json.dumps(results, indent=2)))

    int8 = out / "model.int8.onnx"
    if not int8.is_file():
        calibration = [DataSource(str(ROOT / d), "pranet_train") for d in DATASETS]
        export_onnx(args.model, int8, quantize="int8", calibration=calibration,
                    calibration_images=args.calibration_images)  # fmt: skip
        print(f"int8 model → {int8}", flush=True)
    predictors = {b: create_predictor(b, args.model, int8) for b in BACKENDS}
    results["size"] = predictors["torch"].size[0]
    results["settings"] = {b: p.settings() for b, p in predictors.items()}
    results["file_mib"] = {
        "onnx_fp32": predictors["onnx_fp32"].model.path.stat().st_size / 2**20,
        "onnx_int8": int8.stat().st_size / 2**20,
    }
    results["calibration"] = predictors["onnx_int8"].meta.provenance["quantization"]["calibration"]
    todo = [b for b in BACKENDS if b not in results["speed"]]
    frames = random_frames(args.n, results["size"])
    best: dict[str, float] = {}
    for _ in range(args.rounds if todo else 0):
        for b in todo:
            best[b] = max(best.get(b, 0.0), round(measure(predictors[b], frames), 1))
            print(f"{b}: {best[b]} img/s", flush=True)
    results["speed"].update(best)
    save()
    sources = pranet_test_sources(out, args.limit)
    results["datasets"] = [s.display_name() for s in sources]
    for b in BACKENDS:
        summary = out / "eval" / b / "summary.json"
        if not summary.is_file():
            run_evaluate(predictors[b], sources, summary.parent, progress=False)
            print(f"{b}: evaluated", flush=True)
        stats = json.loads(summary.read_text())
        results["eval"][b] = {
            d: {k: stats[d][k] for k in ("n", "dice", "mdice_256")} for d in stats
        }
        save()
    results["int8_vs_fp32_dice_change"] = dice_change(out)
    save()
    print(table(results))
    print(json.dumps(results["int8_vs_fp32_dice_change"], indent=2))


if __name__ == "__main__":
    main()

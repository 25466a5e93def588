"""Train every zoo architecture under one budget, evaluate it, and tabulate accuracy and cost.

Run (CPU, ~1.5 h for the six on 2 cores):
    .venv/bin/python benchmarks/zoo.py --epochs 4 --out runs/zoo
    .venv/bin/python benchmarks/zoo.py --models pranet emcad --epochs 4 --out runs/zoo

Each model trains with ``polyp_unet_lite0`` (256², flips, BCE+Dice, AdamW 1e-3 cosine, batch 16,
EfficientNet-Lite0 ImageNet encoder) for ``--epochs`` epochs; PraNet and EMCAD add deep supervision
(PraNet with its structure loss). Then ``colonseg evaluate`` on the Kvasir-SEG and CVC-ClinicDB
PraNet test splits, parameter count, GFLOPs and CPU images/s (batch 1) at 352². Results go to
``<out>/zoo.json`` (merged across invocations) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from predictor_speed import measure, random_frames

from colonseg.data.io import write_atomic
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import load_pretrained
from colonseg.engine.config import load_config
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.train import run_train
from colonseg.models.cost import count_gflops, count_params_m

MODELS = ["unet", "attention_unet", "unetplusplus", "deeplabv3plus", "pranet", "emcad"]
PRECISION = "auto"  # bf16 where the CPU runs it natively (as predict/evaluate do by default)
EXTRA = {  # what each architecture needs on top of the shared budget
    "unet": [],
    "attention_unet": [],
    "unetplusplus": [],
    "deeplabv3plus": [],
    "pranet": ["loss.name=structure", "loss.deep_supervision=true"],
    "emcad": ["loss.deep_supervision=true"],
}


def speed(model_dir: Path) -> float:
    """CPU images/s at 352², batch 1, default precision."""
    predictor = Predictor.from_pretrained(model_dir, device="cpu", size=352, precision=PRECISION)
    return measure(predictor, random_frames(40))


def overrides(name: str, epochs: int, out: Path) -> list[str]:
    """``colonseg train polyp_unet_lite0 ...`` overrides that give ``name`` the shared budget."""
    own_decoder = [] if name in ("unet", "attention_unet") else ["model.kwargs={}"]
    return [
        f"name={name}",
        f"out_dir={out}",
        f"model.name={name}",
        *own_decoder,  # the U-Net decoder widths of the base config do not fit the others
        f"trainer.max_epochs={epochs}",
        "trainer.progress_bar=false",
        *EXTRA[name],
    ]


def run_one(name: str, epochs: int, out: Path, data: str) -> dict:
    cfg = load_config("polyp_unet_lite0", overrides(name, epochs, out))
    model_dir = out / name / "model"
    if (model_dir / "config.json").is_file():
        trained = load_pretrained(model_dir)[1].provenance.get("epochs")
        if trained != epochs:
            raise SystemExit(f"error: {model_dir} was trained {trained} epochs, not {epochs}")
    else:
        resume = (out / name / "checkpoints" / "last.ckpt").is_file()
        run_train(cfg, resume=resume, command=command(name, epochs, out))
    minutes = json.loads((out / name / "metrics.json").read_text()).get("time/minutes")
    predictor = Predictor.from_pretrained(model_dir, device="cpu", precision=PRECISION)
    sources = [
        DataSource(path=f"{data}/kvasir-seg", split="pranet_test", name="kvasir-seg"),
        DataSource(path=f"{data}/cvc-clinicdb", split="pranet_test", name="cvc-clinicdb"),
    ]
    summary = run_evaluate(predictor, sources, out / name / "eval", progress=False)
    net = predictor.model.float()
    row = {
        "model": name,
        "epochs": epochs,
        "train_minutes": minutes,
        "params_m": count_params_m(net),
        "gflops_352": count_gflops(net),
        "cpu_img_s_352": speed(model_dir),
        "precision": PRECISION,
    }
    for ds, key in (("kvasir-seg", "kvasir"), ("cvc-clinicdb", "clinicdb")):
        for metric in ("dice", "iou", "mdice_256", "s_measure", "accuracy", "f1"):
            row[f"{key}_{metric}"] = summary[ds][metric]
    return row


def command(name: str, epochs: int, out: Path) -> str:
    return "colonseg train polyp_unet_lite0 " + " ".join(overrides(name, epochs, out))


def table(rows: list[dict], out: Path) -> str:
    head = (
        "| model | Kvasir dice | iou | mDice256 | Sα | ClinicDB dice | iou | mDice256 | Sα "
        "| params (M) | GFLOPs@352 | CPU img/s@352 | train min |"
    )
    lines = [head, "|---" + "|---:" * 12 + "|"]
    for r in rows:
        cells = [r["model"]]
        for k in ("kvasir", "clinicdb"):
            cells += [f"{r[f'{k}_{m}']:.3f}" for m in ("dice", "iou", "mdice_256", "s_measure")]
        cells += [f"{r['params_m']:.2f}", f"{r['gflops_352']:.2f}", f"{r['cpu_img_s_352']:.1f}"]
        cells.append(f"{r['train_minutes']:.0f}" if r.get("train_minutes") else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each row's training command (then `colonseg evaluate` as above):", ""]
    lines += [f"- `{r['model']}`: `{command(r['model'], r['epochs'], out)}`" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument(
        "--speed-only", action="store_true", help="re-measure img/s of trained models only"
    )
    parser.add_argument("--table-only", action="store_true", help="print the table of zoo.json")
    args = parser.parse_args()
    results_path = args.out / "zoo.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in [] if args.table_only else args.models:
        if args.speed_only:
            results[name]["cpu_img_s_352"] = speed(args.out / name / "model")
        else:
            results[name] = run_one(name, args.epochs, args.out, args.data)
        args.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(results, indent=2)
        write_atomic(results_path, lambda tmp, text=text: tmp.write_text(text))
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    print(table([results[m] for m in MODELS if m in results], args.out))


if __name__ == "__main__":
    main()

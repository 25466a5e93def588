"""Three-class BKAI-IGH NeoPolyp: every architecture under one budget, with and without
post-processing (rule-based and the learned region refiner), in one table.

Run (CPU; trains six models, then scores them; each step is skipped when its output exists):
    .venv/bin/python benchmarks/neopolyp_architectures.py --train \
        --refiner runs/np32_refiner/model --out runs/np32/table.json
    .venv/bin/python benchmarks/neopolyp_architectures.py --models neopolyp_unet_lite0 ...

Training (``--train``): ``colonseg train neopolyp_recipe model.name=ARCH`` with the CPU budget of
this table — every encoder starts from the shipped binary ``default`` model's EfficientNet-Lite0
(``model.init_encoder_from=default``, decoders fresh), 6 epochs at 256² (``--epochs``,
``--size``) — into ``runs/np32_ARCH``. Scoring: BKAI ``splits/test.txt`` (200 frames), fp32,
one forward pass per image; every post-processing variant is applied to that same prediction.
Columns: ``dice_seg`` / ``dice_neo`` / ``dice_non`` pooled over all pixels (NeoUNet's
definition), ``dice`` the per-image Dice of polyp vs background, ``neo_img`` / ``non_img`` a
class's Dice averaged over the test images holding that class (145 / 62 images: the pooled
``dice_non`` leans on a few large regions — one frame holds 27 % of the class's test pixels),
``kaggle`` the competition's per-image mean over the two classes
(``colonseg.metrics.multiclass.kaggle_dice``), params, and CPU img/s at the model's size (batch
1, default precision; ``--speed-frames``, 0 skips it: the speed is measured once and later runs
keep it, so score while other jobs run and time when the machine is quiet).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
from predictor_speed import measure, random_frames
from tqdm import tqdm

from colonseg.data.io import read_image, write_atomic
from colonseg.data.labels import read_label
from colonseg.data.layouts import find_pairs
from colonseg.engine.predict import Predictor
from colonseg.metrics import ConfusionMeter, binary_metrics
from colonseg.metrics.multiclass import kaggle_dice
from colonseg.postprocess import PostProcess

ROOT = Path(
    os.environ.get("COLONSEG_DATA", Path(__file__).resolve().parents[2] / "shared/datasets")
)
ARCHS = ["unet", "attention_unet", "unetplusplus", "deeplabv3plus", "pranet", "emcad"]


def train_command(arch: str, epochs: int, size: int) -> list[str]:
    return ["colonseg", "train", "neopolyp_recipe", f"model.name={arch}",
            "model.init_encoder_from=default", f"data.image_size={size}",
            f"trainer.max_epochs={epochs}", f"name=np32_{arch}",
            "trainer.progress_bar=false"]  # fmt: skip


def variants(refiner: str | None) -> list[str]:
    extra = [f"refine={refiner}", f"refine={refiner},class_vote"] if refiner else []
    return ["none", "class_vote", *extra]


def score(model: str, specs: list[str], limit: int | None) -> dict:
    """``{"variants": {spec: scores}, "params", "arch", "command", "minutes"}`` of one model."""
    predictor = Predictor.from_pretrained(model, device="cpu", postprocess="none", precision="fp32")
    pairs = find_pairs(ROOT / "bkai-neopolyp", split="test")[:limit]
    posts = {spec: PostProcess.parse(spec) for spec in specs}
    meters = {spec: ConfusionMeter(3) for spec in specs}
    dice = {spec: [] for spec in specs}
    kaggle = {spec: [] for spec in specs}
    per_class = {spec: {1: [], 2: []} for spec in specs}  # Dice of a class on its images
    for pair in tqdm(pairs, desc=str(model), leave=False):
        image, truth = read_image(pair.image), read_label(pair.mask, predictor.scheme)
        probs = predictor.predict_torch(predictor.preprocess([image]))[0].cpu().numpy()
        for spec, post in posts.items():
            predictor.post = post
            out = predictor.finish(probs, image)
            meters[spec].update(out.classes, truth)
            dice[spec].append(binary_metrics(out.mask, truth > 0)["dice"])
            kaggle[spec].append(kaggle_dice(out.classes, truth))
            for c, scores in per_class[spec].items():
                if (truth == c).any():
                    scores.append(binary_metrics(out.classes == c, truth == c)["dice"])
    result = {"variants": {}, "n": len(pairs)}
    for spec in specs:
        scores = meters[spec].class_scores(("bg", "neo", "non"))
        result["variants"][spec] = {k: scores[k] for k in ("dice_seg", "dice_neo", "dice_non")}
        result["variants"][spec].update(dice=float(np.mean(dice[spec])),
                                        kaggle=float(np.mean(kaggle[spec])),
                                        neo_img=float(np.mean(per_class[spec][1])),
                                        non_img=float(np.mean(per_class[spec][2])))  # fmt: skip
    net = predictor.model
    result["params"] = sum(p.numel() for p in net.parameters())
    meta = predictor.meta
    result["arch"] = meta.arch
    result["command"] = meta.provenance.get("command", "")
    run = Path(str(model)).parent / "metrics.json"
    if run.is_file():
        result["minutes"] = json.loads(run.read_text()).get("time/minutes")
    return result


def save(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))


def table(result: dict) -> str:
    lines = ["| model | post-processing | dice_seg | dice_neo | dice_non | dice (per image) | "
             "neo / non per image | Kaggle | params (M) | CPU img/s | train min |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for model, r in result.items():
        for spec, s in r["variants"].items():
            shown = spec.replace(f"refine={r.get('refiner', '')}", "refine")
            img_s = f"{r['img_s']:.0f}" if r.get("img_s") else ""
            minutes = f"{r['minutes']:.0f}" if r.get("minutes") else ""
            lines.append(
                f"| {r['arch']} (`{model}`) | {shown} | {s['dice_seg']:.3f} | {s['dice_neo']:.3f} "
                f"| {s['dice_non']:.3f} | {s['dice']:.3f} "
                f"| {s['neo_img']:.3f} / {s['non_img']:.3f} | {s['kaggle']:.3f} "
                f"| {r['params'] / 1e6:.1f} | {img_s} | {minutes} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", action="store_true", help="train the six models first")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--models", nargs="*", default=None,
                    help="model folders or zoo names (default: runs/np32_ARCH/model)")  # fmt: skip
    ap.add_argument("--refiner", default=None, help="a region refiner to add as a variant")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--speed-frames", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("runs/np32/table.json"))
    args = ap.parse_args()
    if args.train:
        for arch in ARCHS:
            if not Path(f"runs/np32_{arch}/model/config.json").is_file():
                command = train_command(arch, args.epochs, args.size)
                print("$", shlex.join(command), flush=True)
                subprocess.run(command, check=True)
    models = args.models or [f"runs/np32_{arch}/model" for arch in ARCHS]
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    specs = variants(args.refiner)
    for model in models:
        done = result.get(model, {}).get("variants", {})
        missing = [spec for spec in specs if spec not in done]
        if missing:  # only the variants not scored yet
            new = score(model, missing, args.limit)
            result[model] = result.get(model, {}) | new | {"variants": done | new["variants"]}
            result[model]["refiner"] = args.refiner or result[model].get("refiner", "")
            save(args.out, result)
        if args.speed_frames and not result[model].get("img_s"):  # run it on a quiet machine
            predictor = Predictor.from_pretrained(model, device="cpu")
            frames = random_frames(args.speed_frames, predictor.size[0])
            result[model]["img_s"] = measure(predictor, frames)
            save(args.out, result)
    print(table(result))


if __name__ == "__main__":
    main()

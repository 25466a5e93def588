"""The ``colonseg`` command line: parse, build a config, call one ``engine.run_*`` function."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from colonseg.errors import ColonsegError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Colorectal image segmentation.")
datasets_app = typer.Typer(no_args_is_help=True, help="Inspect dataset folders.")
app.add_typer(datasets_app, name="datasets")
mssg_app = typer.Typer(no_args_is_help=True, help="MSSG: unsupervised gland segmentation.")
app.add_typer(mssg_app, name="mssg")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _friendly(fn):
    """Turn user-input errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ColonsegError, FileNotFoundError) as exc:
            _fail(str(exc))

    return wrapper


def _predictor(model, weights, backend, tta, size, device, threshold, precision, postprocess):
    """The Predictor that ``predict`` and ``evaluate`` share, from their common options."""
    from colonseg.engine.predict import Predictor

    return Predictor.from_pretrained(
        model,
        weights=weights,
        backend=backend,
        tta=tta,
        size=size,
        device=device,
        threshold=threshold,
        precision=precision,
        postprocess=postprocess,
    )


ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Zoo name, checkpoint folder or exported .onnx file.")
]
BackendOpt = Annotated[
    str, typer.Option(help="torch, or onnx (onnxruntime on the CPU; exported once, cached).")
]
WeightsOpt = Annotated[Path | None, typer.Option(help="Other weights (.safetensors/.pth/.ckpt).")]
TTAOpt = Annotated[
    str | None,
    typer.Option(
        "--tta",
        help="Test-time augmentation: none, flip (2 passes) or d4 (8 views: flips and quarter "
        "turns). Default: the model's own setting.",
        show_default=False,
    ),
]
SizeOpt = Annotated[int | None, typer.Option(help="Override the model's input size.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
ThresholdOpt = Annotated[float | None, typer.Option(help="Override the model's threshold.")]
PrecisionOpt = Annotated[
    str, typer.Option(help="fp32, bf16 or auto (bf16 where the hardware runs it natively).")
]
PostOpt = Annotated[
    str | None,
    typer.Option(
        "--postprocess",
        help="Post-processing steps, e.g. 'fill_holes,min_area=0.001,class_vote'; 'none' for "
        "none; default: the checkpoint's. Steps: smooth[=sigma], fov, otsu[=floor], close=K, "
        "morphology, fill_holes, min_area=F, keep_largest, class_vote.",
    ),
]


@app.command()
@_friendly
def train(
    config: Annotated[str, typer.Argument(help="YAML file or shipped config name.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last.ckpt.")] = False,
    synthetic: Annotated[
        bool, typer.Option(help="medsam_box: train on generated images (no data needed).")
    ] = False,
) -> None:
    """Train a model: colonseg train polyp_unet_lite0 trainer.max_epochs=5.

    MAPSeg configs (METHOD: mapseg) take MAPSeg-style overrides:
    colonseg train configs/mapseg/polyp.yaml DATASET.target=polyp TEST.only=True

    Automatic MedSAM (METHOD: medsam_box), boxes only: colonseg train medsam_box/polyp
    (add --synthetic to try it with no data).

    MSSG (METHOD: mssg), no labels: colonseg train mssg/glas
    """
    from colonseg.config import config_method, load_config
    from colonseg.engine.train import run_train

    if resume and config_method(config) != "supervised":
        raise ColonsegError(
            f"--resume is for supervised configs; a {config_method(config)} run restarts (its "
            "caches — embeddings, proposals, finished MSSG rounds — are reused)"
        )
    if config_method(config) == "mapseg":
        from colonseg.methods.mapseg.train import load_mapseg_config, run_mapseg

        result = run_mapseg(load_mapseg_config(config, overrides or []))
        typer.echo(f"model: {result['model_dir']}")
        for name, stats in result.get("summary", {}).items():
            shown = ("dice", "iou", "pixel_auroc", "aupro", "image_auroc", "fp_area")
            typer.echo(f"{name}: " + ", ".join(f"{k} {stats[k]:.4f}" for k in shown if k in stats))
        return
    if config_method(config) == "medsam_box":
        from colonseg.methods.medsam_box.train import (
            load_medsam_box_config,
            run_medsam_box,
            synthetic_config,
        )

        cfg = load_medsam_box_config(config, overrides or [])
        if synthetic:
            cfg = synthetic_config(cfg, Path(cfg.out_dir) / cfg.name / "synthetic_data")
        result = run_medsam_box(cfg)
        typer.echo(f"model: {result['model_dir']}")
        for name, stats in result.get("summary", {}).items():
            base = result["baselines"].get(name, {})
            extra = "".join(f", {k} dice {v['dice']:.4f}" for k, v in base.items())
            typer.echo(f"{name}: dice {stats['dice']:.4f}, iou {stats['iou']:.4f} (no box){extra}")
        return
    if config_method(config) == "mssg":
        from colonseg.methods.mssg.train import load_mssg_config, run_mssg

        result = run_mssg(load_mssg_config(config, overrides or []))
        typer.echo(f"model: {result['model_dir']}")
        for name, stats in result.get("summary", {}).items():
            shown = ("miou", "dice", "iou_fg", "object_f1", "object_dice", "object_hausdorff")
            typer.echo(f"{name}: " + ", ".join(f"{k} {stats[k]:.4f}" for k in shown if k in stats))
        return
    if synthetic:
        raise ColonsegError("--synthetic is for medsam_box configs (METHOD: medsam_box)")

    cfg = load_config(config, overrides or [])
    result = run_train(cfg, resume=resume)
    val = {k: round(v, 4) for k, v in result["metrics"].items() if k.startswith("val/")}
    typer.echo(f"model: {result['model_dir']}\nval: {json.dumps(val)}")


@app.command()
@_friendly
def evaluate(
    data: Annotated[list[str], typer.Option("--data", "-d", help="Dataset folder (repeatable).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    model: ModelOpt = "default",
    split: Annotated[
        list[str] | None, typer.Option(help="Split file per --data, in order.")
    ] = None,
    layout: Annotated[
        str, typer.Option(help="Layout name for every --data (default: detect).")
    ] = "auto",
    weights: WeightsOpt = None,
    tta: TTAOpt = None,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    threshold: ThresholdOpt = None,
    precision: PrecisionOpt = "auto",
    postprocess: PostOpt = None,
    backend: BackendOpt = "torch",
) -> None:
    """Evaluate a model on labelled datasets: per_case.csv, summary.json, table.md, report.html."""
    from colonseg.data.sources import DataSource
    from colonseg.engine.evaluate import run_evaluate

    split = split or []
    if len(split) > len(data):
        _fail(f"{len(split)} --split values for {len(data)} --data values")
    sources = [
        DataSource(d, split[i] if i < len(split) else None, layout) for i, d in enumerate(data)
    ]
    predictor = _predictor(
        model, weights, backend, tta, size, device, threshold, precision, postprocess
    )
    run_evaluate(predictor, sources, out, title=f"colonseg evaluate — {model}")
    typer.echo(f"{model}: {predictor.settings()}")
    typer.echo((out / "table.md").read_text())
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
@_friendly
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Images, folders and/or videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    tta: TTAOpt = None,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    threshold: ThresholdOpt = None,
    precision: PrecisionOpt = "auto",
    skip_bad: Annotated[
        bool, typer.Option(help="Exit 0 even if some files were unreadable.")
    ] = False,
    attention: Annotated[
        bool, typer.Option(help="Also write the attention maps as heat maps (attention_unet).")
    ] = False,
    postprocess: PostOpt = None,
    rle_csv: Annotated[
        Path | None,
        typer.Option(help="Also write a run-length-encoded Kaggle submission CSV (NeoPolyp)."),
    ] = None,
    backend: BackendOpt = "torch",
    frame_masks: Annotated[
        bool, typer.Option(help="Videos: also write every frame's mask as PNG.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 8,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Image-decoding processes (default: automatic).")
    ] = None,
) -> None:
    """Segment images and videos.

    Images: masks/, probs/ and overlays/ (mask + heat map) as PNG. Videos (mp4, avi, mov, mkv):
    <name>_overlay.mp4, <name>_frames.csv (per-frame polyp area and confidence) and, with
    --frame-masks, <name>_masks/.
    """
    from colonseg.engine.predict_files import run_predict
    from colonseg.engine.predict_video import VIDEO_EXTENSIONS, run_predict_video

    videos = [p for p in inputs if p.suffix.lower() in VIDEO_EXTENSIONS]
    images = [p for p in inputs if p not in videos]
    predictor = _predictor(
        model, weights, backend, tta, size, device, threshold, precision, postprocess
    )
    for video in videos:
        r = run_predict_video(predictor, video, out, frame_masks, batch_size)
        typer.echo(f"{video}: {r['frames']} frames ({r['polyp_frames']} with polyp) → {r['video']}")
    if not images:
        return
    result = run_predict(
        predictor,
        images,
        out,
        save_attention=attention,
        rle_csv=rle_csv,
        batch_size=batch_size,
        workers=workers,
    )
    typer.echo(f"{len(result['written'])} images → {out}")
    for _, message in result["failed"]:
        typer.echo(f"skipped: {message}", err=True)
    if result["failed"] and not skip_bad:
        raise typer.Exit(1)


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo_out"),
    model: ModelOpt = "default",
) -> None:
    """Run the shipped model on the bundled sample frames (no data or network needed)."""
    from colonseg.engine.demo import run_demo

    result = run_demo(out, model)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"{result['n_images']} frames → {out}/overlays, report: {out / 'report.html'}")


@app.command()
@_friendly
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.onnx).")],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
) -> None:
    """Export a model to ONNX (dynamic batch and size; the checkpoint config is embedded)."""
    from colonseg.engine.onnx_backend import export_onnx

    if format != "onnx":
        _fail(f"Unknown export format '{format}'. Available: onnx.")
    path = export_onnx(model, out, weights)
    typer.echo(
        f"{model} → {path} ({path.stat().st_size / 2**20:.1f} MiB); run it with "
        f"`colonseg predict IMAGES --model {path} --out DIR`"
    )


@app.command()
@_friendly
def ensemble(
    models: Annotated[list[str], typer.Argument(help="Two or more zoo names or checkpoints.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output checkpoint folder.")],
    half: Annotated[bool, typer.Option(help="Store the weights in fp16.")] = False,
) -> None:
    """Combine checkpoints of one task into one model that averages their probabilities."""
    from colonseg.engine.ensemble import combine_checkpoints

    path = combine_checkpoints(models, out, half=half)
    typer.echo(
        f"{len(models)} models → {path}; evaluate it with "
        f"`colonseg evaluate --model {path} --data DATASET --out DIR`"
    )


@app.command("app", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def web_app(ctx: typer.Context) -> None:
    """Start the web app (Streamlit). Extra options go to Streamlit: --server.port 8600."""
    from colonseg.app import logic

    page = Path(logic.__file__).with_name("page.py")
    command = [
        sys.executable, "-m", "streamlit", "run", str(page),
        "--server.headless=true",
        f"--server.maxUploadSize={logic.MAX_UPLOAD_MB}",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
        *ctx.args,
    ]  # fmt: skip
    os.execv(sys.executable, command)  # Streamlit takes over this process (signals reach it)


@app.command()
@_friendly
def synth(
    frames: Annotated[Path, typer.Argument(help="Folder of normal frames.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG grid.")] = Path(
        "simpo_grid.png"
    ),
    textures: Annotated[
        Path | None, typer.Option(help="Texture folder (DTD classes or MAPSeg's KTH/).")
    ] = None,
    shapes: Annotated[
        Path | None, typer.Option(help="Shape-mask folder (MAPSeg's polyp_like_mask/).")
    ] = None,
    fill: Annotated[
        list[str] | None, typer.Option(help="colon and/or texture (repeatable; default both).")
    ] = None,
    n: Annotated[int, typer.Option(min=1, help="Number of examples.")] = 12,
    seed: int = 0,
) -> None:
    """Write a grid of SIMPO synthetic polyps pasted into normal frames, to inspect them."""
    from colonseg.methods.mapseg.synth import run_synth

    fills = tuple(fill or (["colon", "texture"] if textures else ["colon"]))
    path = run_synth(frames, out, textures, shapes, fills, n, seed)
    typer.echo(f"{n} SIMPO examples → {path}")


@app.command()
def models() -> None:
    """List the trained checkpoints shipped in the zoo, with their metrics."""
    from colonseg.engine.checkpoint import ZOO_DIR, list_zoo

    def arch(cfg: dict) -> str:
        kw = cfg["init_kwargs"]
        if cfg["arch"] == "ensemble":
            return "ensemble of " + " + ".join(arch(m) for m in kw.get("members", []))
        return f"{cfg['arch']}/{kw.get('encoder', '?')}"

    for name in list_zoo():
        cfg = json.loads((ZOO_DIR / name / "config.json").read_text())
        metrics = " ".join(f"{k}={v:.3f}" for k, v in cfg.get("metrics", {}).items())
        typer.echo(f"{name}\t{arch(cfg)}\t{metrics}")


@datasets_app.command("check")
@_friendly
def datasets_check(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    layout: Annotated[str, typer.Option(help="Layout name (default: detect).")] = "auto",
    split: Annotated[str | None, typer.Option(help="Split file or name.")] = None,
) -> None:
    """Report the layout found, the number of pairs and every problem (exit 1 if any)."""
    from colonseg.data.check import run_check

    report = run_check(path, layout, split)
    typer.echo(f"{path}: layout {report['layout']}, {report['n_pairs']} pairs")
    for problem in report["problems"]:
        typer.echo(f"problem: {problem}")
    if report["problems"]:
        raise typer.Exit(1)


@mssg_app.command("propose")
@_friendly
def mssg_propose(
    data: Annotated[Path, typer.Argument(help="Folder of histology images (or a dataset).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output (and cache) folder.")],
    split: Annotated[
        str | None, typer.Option(help="Split of a dataset (GlaS: train, testA, testB, test).")
    ] = None,
    layout: Annotated[str, typer.Option(help="Dataset layout (default: detect).")] = "auto",
    scale: Annotated[float, typer.Option(help="Working scale (paper: 1).")] = 0.5,
    channels: Annotated[int, typer.Option(help="Clustering channels (paper: 128).")] = 32,
    iterations: Annotated[int, typer.Option(help="Iterations per image (paper: 50).")] = 50,
    clusters: Annotated[int, typer.Option(help="k-means clusters (paper: 5).")] = 5,
    refine: Annotated[
        str, typer.Option(help="Refine each gland's box with: litemedsam, medsam_vit_b, none.")
    ] = "litemedsam",
    checkpoint: Annotated[
        Path | None, typer.Option(help="medsam_vit_b.pth for --refine medsam_vit_b.")
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """SPM gland proposals for every image: proposals/ (0 background, 1 border, 2 interior),
    overlays/ to look at, clusters/, argmax/, and their MedSAM refinement in
    refined-<settings>/ (proposals/, overlays/); reruns skip images already done."""
    import torch

    from colonseg.data.io import IMAGE_EXTENSIONS
    from colonseg.data.layouts import Pair, find_pairs
    from colonseg.methods.mssg.propose import run_propose
    from colonseg.methods.mssg.refine import RefineSettings, refined_folder, run_refine
    from colonseg.methods.mssg.spm import SpmSettings

    if not data.is_dir():
        _fail(f"{data}: folder not found")
    plain = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if split or layout != "auto" or not plain:
        pairs = find_pairs(data, layout, split, require_masks=False)
    else:
        pairs = [Pair(p.stem, p, None) for p in plain if not p.stem.endswith("_anno")]
    settings = SpmSettings(scale=scale, channels=channels, iterations=iterations, clusters=clusters)
    refining = RefineSettings(refine, str(checkpoint) if checkpoint else None)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = run_propose(pairs, out, settings, device)
    typer.echo(
        f"{len(pairs)} images: {result['computed']} computed "
        f"({result['seconds_per_image']:.1f} s each), {result['cached']} cached → {out}/overlays"
    )
    refined = refined_folder(out, refining)
    if refined is not None:
        done = run_refine(pairs, out, refined, refining, device)
        typer.echo(
            f"{refine} refinement: {done['computed']} computed, {done['cached']} cached "
            f"→ {refined}/overlays"
        )


def main() -> None:  # pragma: no cover - console entry for `python -m colonseg`
    app(prog_name="colonseg")
    sys.exit(0)

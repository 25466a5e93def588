"""``colonseg predict`` and ``colonseg evaluate``: the commands that run a Predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colonseg.cli.options import (
    BackendOpt,
    DeviceOpt,
    GraphOpt,
    ModelOpt,
    OutOpt,
    PostOpt,
    PrecisionOpt,
    SamCheckpointOpt,
    SizeOpt,
    ThresholdOpt,
    TTAOpt,
    WeightsOpt,
    fail,
    friendly,
)

__all__ = ["create_predictor", "evaluate", "predict"]


def create_predictor(
    model: str,
    weights: Path | None,
    backend: str,
    tta: str | None,
    size: int | None,
    device: str,
    threshold: float | None,
    precision: str,
    postprocess: str | None,
    sam_checkpoint: Path | None = None,
    graph: str = "eager",
):
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
        files={"sam_checkpoint": sam_checkpoint} if sam_checkpoint else None,
        graph=graph,
    )


@friendly
def evaluate(
    data: Annotated[list[str], typer.Option("--data", "-d", help="Dataset folder (repeatable).")],
    out: OutOpt,
    model: ModelOpt = "default",
    split: Annotated[
        list[str] | None, typer.Option(help="Split file per --data, in order.")
    ] = None,
    layout: Annotated[str, typer.Option(help="Layout of every --data (default: detect).")] = "auto",
    weights: WeightsOpt = None,
    sam_checkpoint: SamCheckpointOpt = None,
    tta: TTAOpt = None,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    threshold: ThresholdOpt = None,
    precision: PrecisionOpt = "auto",
    postprocess: PostOpt = None,
    backend: BackendOpt = "torch",
    graph: GraphOpt = "eager",
) -> None:
    """Evaluate a model on labelled datasets.

    Writes per_case.csv, summary.json, table.md and report.html.
    """
    from colonseg.data.sources import DataSource
    from colonseg.engine.evaluate import run_evaluate, trained_on_overlap

    split = split or []
    if len(split) > len(data):
        fail(f"{len(split)} --split values for {len(data)} --data values")
    sources = [
        DataSource(d, split[i] if i < len(split) else None, layout) for i, d in enumerate(data)
    ]
    predictor = create_predictor(
        model, weights, backend, tta, size, device, threshold, precision, postprocess,
        sam_checkpoint, graph,
    )  # fmt: skip
    run_evaluate(predictor, sources, out, title=f"colonseg evaluate — {model}")
    typer.echo(f"{model}: {predictor.settings()}")
    typer.echo((out / "table.md").read_text())
    typer.echo(f"report: {out / 'report.html'}")
    seen, total = trained_on_overlap(predictor.meta, sources)
    if seen:
        typer.echo(f"warning: {seen} of {total} evaluated images were used to train {model}",
                   err=True)  # fmt: skip


@friendly
def predict(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUTS", help="Images, folders and/or videos.")
    ],
    out: OutOpt,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Zoo name, checkpoint folder or .onnx file. For frames from your own hospital: "
            "polyp_general (trained on the polyps of three centres); default is the "
            "PraNet-protocol model that the benchmarks compare.",
        ),
    ] = "default",
    weights: WeightsOpt = None,
    sam_checkpoint: SamCheckpointOpt = None,
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
        Path | None, typer.Option(help="Also write a run-length-encoded Kaggle CSV (NeoPolyp).")
    ] = None,
    backend: BackendOpt = "torch",
    graph: GraphOpt = "auto",
    frame_masks: Annotated[
        bool, typer.Option(help="Videos: also write each frame's mask.")
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Images per forward pass (default: 8; video frames 2).", show_default=False
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Image-decoding processes (default: automatic).")
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            help="Resume a stopped run into the same --out: skip images whose outputs all exist, "
            "videos that are done; a --frame-masks export goes on at its first missing frame."
        ),
    ] = False,
    export: Annotated[
        str | None,
        typer.Option(
            help="Images: also write the masks as polygons: coco (one coco.json, for CVAT) or "
            "labelme (a JSON beside each mask that opens the original image).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Segment images and videos.

    Images: masks/, probs/ and overlays/ (mask + heat map) as PNG, mirroring the folders given
    (their label folders, such as a dataset's masks/, are left out); predictions.csv (per image:
    polyp 0/1, regions, area %, peak and mean probability) and review.html (thumbnails, most
    confident or most uncertain first). Videos (mp4, avi, mov, mkv):
    <name>_overlay.mp4, <name>_frames.csv (per-frame polyp area and confidence),
    <name>_summary.png (confidence over time, thumbnails of the polyps seen) and, with
    --frame-masks, <name>_masks/. A run stopped midway (Ctrl-C, kill -9) leaves no half-written
    file under its final name; rerun it with --skip-existing to finish it.
    """
    from colonseg.engine.predict_files import EXPORT_FORMATS, run_predict
    from colonseg.engine.predict_video import VIDEO_BATCH, VIDEO_EXTENSIONS, run_predict_video
    from colonseg.registry import look_up_option

    if export is not None:  # before the model loads
        look_up_option(export, EXPORT_FORMATS, "export format")

    videos = [p for p in inputs if p.suffix.lower() in VIDEO_EXTENSIONS]
    images = [p for p in inputs if p not in videos]
    predictor = create_predictor(
        model, weights, backend, tta, size, device, threshold, precision, postprocess,
        sam_checkpoint, graph,
    )  # fmt: skip
    for video in videos:
        r = run_predict_video(predictor, video, out, frame_masks, batch_size or VIDEO_BATCH,
                              skip_existing=skip_existing)  # fmt: skip
        if r["skipped"]:
            typer.echo(f"{video}: skipped, already done → {r['video']}")
            continue
        resumed = f"; resumed at frame {r['resumed_at']}" if r["resumed_at"] else ""
        typer.echo(f"{video}: {r['frames']} frames ({r['polyp_frames']} with polyp{resumed}) → "
                   f"{r['video']}")  # fmt: skip
    if not images:
        return
    result = run_predict(
        predictor, images, out, save_attention=attention, rle_csv=rle_csv,
        batch_size=batch_size or 8, workers=workers, skip_existing=skip_existing, export=export,
    )  # fmt: skip
    typer.echo(f"{len(result['written'])} images → {out}")
    if result["labels"]:
        typer.echo(f"left out {len(result['labels'])} label files (a dataset's masks)")
    if result["skipped"]:
        typer.echo(f"skipped {len(result['skipped'])} already done")
    found = sum(row["polyp"] for row in result["rows"])
    typer.echo(f"{found} of {len(result['rows'])} with a polyp: {result['csv']}")
    typer.echo(f"review: {result['review']}")
    if export == "coco":
        typer.echo(f"polygons: {result['coco']}")
    elif export == "labelme":
        typer.echo(f"polygons: LabelMe JSON beside each mask in {out / 'masks'}")
    for _, message in result["failed"]:
        typer.echo(f"skipped: {message}", err=True)
    if result["failed"] and not skip_bad:
        raise typer.Exit(1)

"""``run_evaluate``: a model against labelled datasets → per_case.csv, summary.json, table.md,
report.html.

``summary.json`` is ``{dataset: {"n", "dice", "iou", "mdice_256", "precision", "recall", "f1",
"accuracy", "specificity", "s_measure", "e_measure_mean", "e_measure_max", "wfm", "mae", "hd95",
"hd95_missing", "pixel_auroc", "aupro"}}``. ``dice``/``iou``/... are taken at the model's threshold
and averaged over images; ``mdice_256`` is the PraNet toolbox mean over 256 thresholds; the SOD
metrics come from pysodmetrics; ``pixel_auroc`` pools every pixel of the dataset and ``aupro`` is
the MVTec per-region overlap up to FPR 0.3 (both for anomaly maps); ``miou`` (with ``iou_bg``,
``iou_fg``) is MSSG's: IoU of background and of foreground, each pooled over the dataset,
averaged; ``accuracy_pooled`` and ``f1_pooled`` are pixel accuracy and F1 at the threshold from
the same pooled matrix (Keras / scikit-learn style, as the spatial-attention U-Net reference
reports them). On GlaS (instance-labelled annotations) the challenge's ``object_f1``,
``object_dice`` and ``object_hausdorff`` are added (:mod:`colonseg.metrics.glas`).
The empty-mask rule is in :mod:`colonseg.metrics.functional`. All metrics are
computed at each image's original resolution.

Multi-class models (e.g. ``labels: neopolyp``) are scored on the same binary metrics with classes
merged (polyp vs background), plus Dice and IoU pooled over every pixel of the dataset as NeoUNet
and BlazeNeo report them: ``dice_seg``/``iou_seg`` (polyp vs background) and ``dice_<key>``/
``iou_<key>`` per class (``dice_neo``, ``dice_non``); and ``confusion``: the pixel confusion
matrix (rows truth, columns prediction, background first), each row divided by its total. On a
dataset with binary masks a multi-class model gets the binary metrics only (classes merged).
Multi-class models also get ``kaggle_dice``: the BKAI-IGH NeoPolyp Kaggle score (Dice per image
and foreground class, 1 where both are empty, averaged; :func:`colonseg.metrics.kaggle_dice`),
also per image in per_case.csv.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from colonseg.data.io import image_digest, read_image, read_instances, write_atomic
from colonseg.data.labels import read_label, scheme_for_masks
from colonseg.data.layouts import detect_layout, find_pairs
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError
from colonseg.metrics import (
    AUPROMeter,
    AUROCMeter,
    ConfusionMeter,
    ObjectMeter,
    SODMeter,
    binary_metrics,
    hd95,
    kaggle_dice,
    mean_dice_256,
    mean_iou,
    pooled_binary_scores,
    scores_from_matrix,
)
from colonseg.viz.overlays import compare, thumbnail
from colonseg.viz.report import write_report

__all__ = ["SUMMARY_KEYS", "run_evaluate", "trained_on_overlap"]

SUMMARY_KEYS = (
    "dice", "iou", "mdice_256", "precision", "recall", "f1", "accuracy", "specificity",
    "s_measure", "e_measure_mean", "e_measure_max", "wfm", "mae", "hd95",
)  # fmt: skip
_CASE_KEYS = (
    "dice", "iou", "mdice_256", "precision", "recall", "f1", "accuracy", "specificity",
    "s_measure", "e_measure_mean", "wfm", "mae", "hd95", "peak",
)  # fmt: skip


def trained_on_overlap(meta: ModelMeta, sources: list[DataSource]) -> tuple[int, int]:
    """How many of the images in ``sources`` the model was trained on (by the digests its
    checkpoint records, so copies and renamed files count), and how many images there are."""
    seen = {d for digests in meta.trained_on.values() for d in digests}
    files = []
    for s in sources:
        layout = detect_layout(s.path) if s.layout == "auto" else s.layout
        files += [p.image for p in find_pairs(s.path, layout, s.split)]
    return (sum(image_digest(f) in seen for f in files) if seen else 0), len(files)


def _evaluate_source(predictor: Predictor, source: DataSource, progress: bool):
    layout = detect_layout(source.path) if source.layout == "auto" else source.layout
    pairs = find_pairs(source.path, layout, source.split)
    scheme = scheme_for_masks(predictor.scheme, [p.mask for p in pairs])
    sod, auroc, aupro, pooled = SODMeter(), AUROCMeter(), AUPROMeter(), ConfusionMeter(2)
    glands = ObjectMeter() if layout == "glas" else None
    classes = ConfusionMeter(scheme.num_classes) if scheme.multiclass else None
    rows, pictures = [], {}
    for pair in tqdm(pairs, desc=source.display_name(), disable=not progress, leave=False):
        image, truth = read_image(pair.image), read_label(pair.mask, scheme)
        if image.shape[:2] != truth.shape:
            raise ColonsegError(
                f"{pair.mask}: mask size {truth.shape[1]}x{truth.shape[0]} differs from image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        target = (truth > 0).astype(np.uint8)
        out = predictor.predict(image)
        row = {"id": pair.id, **binary_metrics(out.mask, target)}
        row["mdice_256"] = mean_dice_256(out.prob, target)
        row["hd95"] = hd95(out.mask, target)
        row["peak"] = float(out.prob.max())  # the frame's image-level (anomaly) score
        row.update(sod.update(out.prob, target))
        pooled.update(out.mask > 0, target)
        if glands is not None:
            row.update(glands.update(out.mask > 0, read_instances(pair.mask)))
        auroc.update(out.prob, target)
        aupro.update(out.prob, target)
        if classes is not None:
            row.update(scores_from_matrix(classes.update(out.classes, truth), scheme.keys))
            row["kaggle_dice"] = kaggle_dice(out.classes, truth, scheme.num_classes)
        rows.append(row)
        pictures[pair.id] = thumbnail(compare(image, out.mask, target))
    stats: dict[str, float] = {"n": len(rows)}
    for key in SUMMARY_KEYS:
        if key in ("s_measure", "e_measure_mean", "e_measure_max", "wfm", "mae"):
            continue
        values = [r[key] for r in rows if not math.isnan(r[key])]
        stats[key] = float(np.mean(values)) if values else float("nan")
    stats.update(sod.compute())
    stats["hd95_missing"] = sum(math.isnan(r["hd95"]) for r in rows)
    ordered = {"n": stats["n"], **{k: stats[k] for k in SUMMARY_KEYS}}
    ordered["hd95_missing"] = stats["hd95_missing"]
    ordered["pixel_auroc"] = auroc.compute()
    ordered["aupro"] = aupro.compute()
    ordered.update(mean_iou(pooled.matrix))
    ordered.update(pooled_binary_scores(pooled.matrix))
    if glands is not None:
        ordered.update(glands.compute())
    if classes is not None:
        ordered.update(classes.class_scores(scheme.keys))
        ordered["kaggle_dice"] = float(np.mean([r["kaggle_dice"] for r in rows]))
        ordered["confusion"] = classes.normalized()
        ordered["confusion_classes"] = list(scheme.class_names)
    return ordered, rows, pictures


def _scalar_keys(summary: dict[str, dict]) -> list[str]:
    """Every scalar metric of any dataset, in first-seen order (``n`` and matrices left out)."""
    keys: list[str] = []
    for stats in summary.values():
        for k, v in stats.items():
            if k not in ("n", "hd95_missing") and isinstance(v, float | int) and k not in keys:
                keys.append(k)
    return keys


def _table_md(summary: dict[str, dict]) -> str:
    keys = _scalar_keys(summary)
    cols = ["n", *keys]
    lines = ["| dataset | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in summary.items():
        cells = [str(s["n"])] + [f"{s[k]:.4f}" if k in s else "" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_evaluate(
    predictor: Predictor,
    sources: list[DataSource],
    out_dir: str | Path,
    progress: bool = True,
    title: str = "colonseg evaluation",
) -> dict[str, dict]:
    """Evaluate ``predictor`` on every source; write the four result files into ``out_dir``.
    The report's heading is ``title`` followed by what the Predictor does (size, precision, TTA,
    threshold, post-processing), so every report says how its numbers were made.

    Returns:
        The summary dict (also written to ``summary.json``).
    """
    out_dir = Path(out_dir)
    names = [s.display_name() for s in sources]
    if len(set(names)) != len(names):
        raise ColonsegError(f"two --data entries share the name {names}: give them distinct names")
    summary, cases, pictures = {}, {}, {}
    for source, name in zip(sources, names, strict=True):
        summary[name], cases[name], pictures[name] = _evaluate_source(predictor, source, progress)
    buf = io.StringIO()
    case_keys = list(_CASE_KEYS)
    for rows in cases.values():
        case_keys += [k for k in rows[0] if k not in case_keys and k != "id"]
    writer = csv.DictWriter(buf, fieldnames=["dataset", "id", *case_keys])
    writer.writeheader()
    for name, rows in cases.items():
        for r in rows:
            cells = {k: f"{r[k]:.6f}" for k in case_keys if k in r}
            writer.writerow({"dataset": name, "id": r["id"], **cells})
    write_atomic(out_dir / "per_case.csv", lambda tmp: tmp.write_text(buf.getvalue()))
    text = json.dumps(summary, indent=2)
    write_atomic(out_dir / "summary.json", lambda tmp: tmp.write_text(text))
    table = _table_md(summary)
    write_atomic(out_dir / "table.md", lambda tmp: tmp.write_text(table))
    heading = f"{title}: {predictor.settings()}"
    write_report(out_dir / "report.html", heading, summary, cases, pictures)
    return summary

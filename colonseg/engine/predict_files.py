"""``run_predict``: images and folders → masks, probability maps, overlays, a per-image summary
CSV and a review page on disk.

Inputs and output names:
    A folder is searched recursively and its tree is mirrored under every output folder:
    ``<folder>/<sub>/<name>.jpg`` gives ``masks/<sub>/<name>.png`` (likewise ``probs/``,
    ``overlays/``, ``attention/`` and ``thumbs/<sub>/<name>.jpg``). A file given by itself goes to
    the top level (``masks/<name>.png``). Two inputs that would still share an output name
    (``a.jpg`` and ``a.png`` in one folder; the same name at the same place in two folders
    given) are told apart by suffixing the later one, in input order, ``_2``, ``_3``...; the
    ``mask`` column of ``predictions.csv`` says which is which. A file reached twice (a folder
    and a file inside it) is predicted once.

    Label files are not images: where a layout of :mod:`colonseg.data.layouts` is recognised in
    a folder given or any folder below it, the layout's mask folders (``masks/``, ``Ground
    Truth/``, ``train_gt/``, MVTec ``ground_truth/``...) and its masks beside the images (GlaS
    ``*_anno``, CVC-ColonDB ``pN``) are left out (listed in ``result["labels"]``), as is the
    output folder when it lies inside a folder given. A file given by itself is always predicted.

``predictions.csv``, one row per image (predicted, or skipped by ``skip_existing``; unreadable
files have none), in input order:

======================  ========================================================================
``file``                the image: the folder given joined with its path inside it, or the file
``mask``                its mask, relative to the output folder
``polyp``               1 if the final mask (model threshold, then post-processing) has a pixel
``regions``             connected regions of the mask (8-connectivity)
``area_percent``        mask pixels / image pixels × 100
``peak_probability``    the highest polyp probability in the image
``mean_probability``    the mean polyp probability over the mask's pixels; 0 for an empty mask
``area_percent_<key>``  three-class models: each class's area (keys ``neo``, ``non``)
======================  ========================================================================

The rows of images skipped by ``skip_existing`` are computed from their saved mask and their saved
probability map (probabilities then to the 1/255 they were saved at; empty without ``probs/``).
``review.html`` (:mod:`colonseg.viz.review`) shows every image's mask overlay from ``thumbs/``,
most confident first, and sorts by uncertainty at a click.

Polygon export (``export``): one polygon per connected region, its outer outline (holes are
filled), labelled with the checkpoint's class names (:mod:`colonseg.data.annotations`):

``coco``     ``coco.json`` for the run, each image's ``file_name`` its path inside the folder given
             (or its file name): import it into a CVAT task made from the same images (Upload
             annotations → COCO 1.0).
``labelme``  ``masks/<name>.json`` beside each mask, its ``imagePath`` the original image relative
             to the JSON and no image data embedded: LabelMe opens the JSON and loads the image
             through that path, so keep the images and the output folder where they were.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from colonseg.data.datamodule import end_with_parent
from colonseg.data.io import (
    collect_images,
    read_image,
    remove_stale_temp,
    unique_stems,
    write_atomic,
    write_png,
)
from colonseg.data.labels import LabelScheme, read_label
from colonseg.data.layouts import LAYOUTS, detect_layout
from colonseg.data.rle import submission_rows, write_submission
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError
from colonseg.registry import look_up_option
from colonseg.viz.overlays import heatmap, overlay_prediction
from colonseg.viz.review import write_review, write_thumbnail

__all__ = ["CSV_FIELDS", "EXPORT_FORMATS", "run_predict"]

CSV_FIELDS = (
    "file", "mask", "polyp", "regions", "area_percent", "peak_probability", "mean_probability",
)  # fmt: skip
EXPORT_FORMATS = ("coco", "labelme")


class _Input(NamedTuple):
    path: Path  # the file, as given or joined onto the folder given
    name: str  # its outputs' path under each output folder, without suffix: "sub/stem"
    source: str  # its path inside the folder given, or its file name (the COCO file_name)


class _ImageFiles(Dataset):
    """Decodes image files in DataLoader workers; an unreadable file yields its error message."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Path, np.ndarray | None, str | None]:
        try:
            return self.files[i], read_image(self.files[i]), None
        except ColonsegError as exc:
            return self.files[i], None, str(exc)


def _folders_up_to(f: Path, folder: Path) -> Iterator[Path]:
    """``f``'s folder and those above it, up to ``folder``."""
    for d in f.parents:
        yield d
        if d == folder:
            return


def _label_files(folder: Path, files: list[Path]) -> set[Path]:
    """The files among ``files`` (found in ``folder``) that a dataset layout recognised in
    ``folder`` or a folder below it reads as labels: everything in its mask folders, and its
    masks beside their images."""
    label_dirs: set[Path] = set()
    labels: set[Path] = set()
    for d in sorted({d for f in files for d in _folders_up_to(f, folder)}):
        if d in label_dirs or any(p in label_dirs for p in d.parents):
            continue
        try:
            layout = detect_layout(d)
            if layout in ("coco", "labelme"):  # their masks live in the cache, not among inputs
                continue
            pairs = LAYOUTS.get(layout)(d)
        except (ColonsegError, OSError):
            continue  # not a dataset root
        for pair in pairs:
            if pair.mask is not None:
                labels.add(pair.mask)
                if pair.mask.parent != pair.image.parent:
                    label_dirs.add(pair.mask.parent)
        if layout == "glas":  # its annotations without an image, too
            labels.update(f for f in files if f.parent == d and f.stem.endswith("_anno"))
    return {f for f in files if f in labels or any(p in label_dirs for p in f.parents)}


def _collect_inputs(inputs: list[str | Path], out_dir: Path) -> tuple[list[_Input], list[Path]]:
    """The images to predict with their output names, and the label files left out."""
    found: list[tuple[Path, str, str]] = []
    left_out: list[Path] = []
    out_abs = Path(os.path.abspath(out_dir))
    for item in map(Path, inputs):
        if not item.is_dir():
            found += [(f, f.stem, f.name) for f in collect_images([item])]
            continue
        try:
            files = collect_images([item])
        except ColonsegError:
            files = []  # a folder without images: an error below only if no input has any
        if Path(os.path.abspath(item)) in out_abs.parents:  # the output folder is inside it
            files = [f for f in files if out_abs not in Path(os.path.abspath(f)).parents]
        labels = _label_files(item, files)
        left_out += sorted(labels)
        for f in (f for f in files if f not in labels):
            inside = f.relative_to(item)
            found.append((f, inside.with_suffix("").as_posix(), inside.as_posix()))
    if not found:
        raise ColonsegError(f"{', '.join(map(str, inputs))}: no images found")
    seen: set[str] = set()
    unique = []
    for entry in found:
        key = os.path.abspath(entry[0])
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    names = unique_stems([name for _, name, _ in unique])
    return [_Input(f, n, s) for (f, _, s), n in zip(unique, names, strict=True)], left_out


def _summary_row(
    item: _Input, classes: np.ndarray, prob: np.ndarray | None, scheme: LabelScheme
) -> dict:
    """One ``predictions.csv`` row (see the module docstring); None where no probability map."""
    mask = classes > 0
    area = int(mask.sum())
    regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1 if area else 0
    row = {
        "file": str(item.path),
        "mask": f"masks/{item.name}.png",
        "polyp": int(area > 0),
        "regions": int(regions),
        "area_percent": 100 * area / mask.size,
        "peak_probability": None if prob is None else float(prob.max()),
        "mean_probability": None if prob is None else float(prob[mask].mean()) if area else 0.0,
    }
    for c, key in enumerate(scheme.keys[1:] if scheme.multiclass else (), start=1):
        row[f"area_percent_{key}"] = 100 * int((classes == c).sum()) / mask.size
    return row


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Numbers to 4 decimals; a missing probability as an empty cell."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else f"{v:.4f}" if isinstance(v, float) else v
                             for k, v in row.items()})  # fmt: skip


def _class_names(predictor: Predictor) -> list[str]:
    """The foreground classes' names (class ``k`` is ``names[k - 1]``): the checkpoint's, or
    its label scheme's where they do not fit."""
    names, scheme = list(predictor.meta.class_names), predictor.scheme
    return names if len(names) == scheme.num_classes - 1 else list(scheme.class_names[1:])


def _write_labelme(path: Path, image: Path, classes: np.ndarray, class_names: list[str]) -> None:
    from colonseg.data.annotations import class_regions, labelme_document

    relative = Path(os.path.relpath(os.path.abspath(image), os.path.abspath(path.parent)))
    h, w = classes.shape
    doc = labelme_document(relative.as_posix(), h, w, class_regions(classes, class_names))
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))


def _review_item(row: dict, item: _Input, out_dir: Path) -> dict:
    overlay = out_dir / "overlays" / f"{item.name}.png"
    return {"file": item.source, "thumb": f"thumbs/{item.name}.jpg",
            "link": f"overlays/{item.name}.png" if overlay.is_file() else row["mask"],
            "polyp": row["polyp"], "regions": row["regions"],
            "area_percent": row["area_percent"], "peak": row["peak_probability"],
            "mean": row["mean_probability"]}  # fmt: skip


def run_predict(
    predictor: Predictor,
    inputs: list[str | Path],
    out_dir: str | Path,
    save_probs: bool = True,
    save_overlays: bool = True,
    save_attention: bool = False,
    rle_csv: str | Path | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    progress: bool = True,
    skip_existing: bool = False,
    export: str | None = None,
) -> dict:
    """Predict every image; write ``masks/``, ``probs/``, ``overlays/``, ``thumbs/``,
    ``predictions.csv`` and ``review.html`` under ``out_dir`` (names: see the module docstring).

    Binary models write masks as 0/255 grey PNGs; multi-class models as RGB PNGs in their label
    scheme's colours (NeoPolyp: the Kaggle code, red neoplastic, green non-neoplastic) and tint
    each class in its colour on the overlay. ``probs/`` holds the polyp probability.

    ``save_attention`` also writes ``attention/<name>.png``: the model's attention maps as heat
    maps side by side (in the order of ``Predictor.attention_maps``; ``attention_unet`` only).
    ``rle_csv`` writes every class map as a run-length-encoded Kaggle submission CSV
    (see :mod:`colonseg.data.rle`). ``export`` (``coco`` or ``labelme``) writes the masks as
    polygons too.

    Images are decoded by ``workers`` DataLoader processes (default: none for fewer than 64
    files, else up to 4) and predicted ``batch_size`` at a time. Unreadable files are skipped
    and reported in ``result["failed"]`` as ``(path, message)``.

    Every file is written atomically (a hidden temporary file renamed into place); the temporary
    files that a killed run left in the folders this run writes are deleted as it starts.
    ``skip_existing`` resumes such a run: an image whose outputs of every requested kind exist
    is not predicted again (listed in ``result["skipped"]``; its summary row, RLE rows, missing
    thumbnail and export are made from its saved outputs). The outputs are trusted as they are:
    after changing the model or its settings, run without it.

    Returns:
        ``{"out_dir", "written", "failed", "skipped", "labels", "rows", "csv", "review",
        "coco"}``: ``labels`` the label files left out, ``rows`` the ``predictions.csv`` rows,
        ``coco`` the COCO file (None without ``export="coco"``). The rows hold numbers
        (``peak_probability`` and ``mean_probability`` None where unknown).
    """
    out_dir = Path(out_dir)
    if save_attention and not predictor.has_attention:
        raise ColonsegError(f"{predictor.meta.arch}: this architecture has no attention maps")
    if export is not None:
        look_up_option(export, EXPORT_FORMATS, "export format")
    items, labels = _collect_inputs(inputs, out_dir)
    requested = {"probs": save_probs, "overlays": save_overlays, "attention": save_attention}
    kinds = ["masks", *(kind for kind, on in requested.items() if on)]
    for folder in sorted({out_dir / k / Path(it.name).parent for k in [*kinds, "thumbs"]
                          for it in items}):  # fmt: skip
        remove_stale_temp(folder)
    remove_stale_temp(out_dir, ["predictions.csv", "review.html", "coco.json"])
    if rle_csv is not None:
        remove_stale_temp(Path(rle_csv).parent, [Path(rle_csv).name])
    scheme = predictor.scheme
    class_names = _class_names(predictor) if export is not None else []
    rows: dict[_Input, dict] = {}
    rle_rows: dict[str, list] = {}
    regions: dict[_Input, tuple] = {}  # ((H, W), regions) per image, for coco.json

    def record(it: _Input, classes: np.ndarray, prob: np.ndarray | None, image) -> None:
        """Everything made from a class map: summary row, thumbnail, RLE rows, export."""
        rows[it] = _summary_row(it, classes, prob, scheme)
        thumb = out_dir / "thumbs" / f"{it.name}.jpg"
        if image is not None or not thumb.is_file():
            write_thumbnail(thumb, read_image(it.path) if image is None else image, classes, scheme)
        if rle_csv is not None:
            rle_rows[it.name] = submission_rows(it.name, classes, scheme.num_classes)
        labelme = out_dir / "masks" / f"{it.name}.json"
        if export == "labelme" and (image is not None or not labelme.is_file()):
            _write_labelme(labelme, it.path, classes, class_names)
        if export == "coco":
            from colonseg.data.annotations import class_regions

            regions[it] = (classes.shape, class_regions(classes, class_names))

    done = {
        it for it in items
        if skip_existing and all((out_dir / k / f"{it.name}.png").is_file() for k in kinds)
    }  # fmt: skip
    skipped = [it for it in items if it in done]
    for it in skipped:
        probs = out_dir / "probs" / f"{it.name}.png"
        prob = read_image(probs)[..., 0] / np.float32(255) if probs.is_file() else None
        record(it, read_label(out_dir / "masks" / f"{it.name}.png", scheme), prob, None)
    todo = {it.path: it for it in items if it not in done}
    if workers is None:
        workers = 0 if len(todo) < 64 else min(4, os.cpu_count() or 1)
    loader = DataLoader(
        _ImageFiles(list(todo)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=end_with_parent,
    )
    written, failed = [], []
    bar = tqdm(total=len(todo), desc="predict", unit="image", disable=not progress)
    for batch in loader:
        failed += [(str(f), err) for f, _, err in batch if err is not None]
        good = [(todo[f], image) for f, image, err in batch if err is None]
        outs = predictor.predict_batch([image for _, image in good]) if good else []
        for (it, image), out in zip(good, outs, strict=True):
            _write_outputs(out_dir, it.name, image, out, predictor, requested)
            record(it, out.classes, out.prob, image)
            written.append(str(it.path))
        bar.update(len(batch))
    bar.close()
    if rle_csv is not None:
        write_submission(rle_csv, [row for it in items for row in rle_rows.get(it.name, [])])
    ordered = [it for it in items if it in rows]
    fields = [*CSV_FIELDS, *(f"area_percent_{k}" for k in scheme.keys[1:] if scheme.multiclass)]
    table = [rows[it] for it in ordered]
    csv_path = write_atomic(out_dir / "predictions.csv", lambda t: _write_csv(t, fields, table))
    review = write_review(out_dir / "review.html",
                          [_review_item(rows[it], it, out_dir) for it in ordered],
                          predictor.threshold)  # fmt: skip
    coco = None
    if export == "coco":
        coco = _write_coco(out_dir / "coco.json", ordered, regions, class_names)
    return {"out_dir": out_dir, "written": written, "failed": failed,
            "skipped": [str(it.path) for it in skipped], "labels": [str(f) for f in labels],
            "rows": table, "csv": csv_path, "review": review, "coco": coco}  # fmt: skip


def _write_outputs(
    out_dir: Path, name: str, image: np.ndarray, out, predictor: Predictor, requested: dict
) -> None:
    """The PNGs of one predicted image: mask, and the probability map, overlay and attention
    maps that were asked for."""
    scheme = predictor.scheme
    write_png(out_dir / "masks" / f"{name}.png", scheme.mask_image(out.classes))
    if requested["probs"]:
        write_png(out_dir / "probs" / f"{name}.png", np.round(out.prob * 255).astype(np.uint8))
    if requested["overlays"]:
        tinted = overlay_prediction(image, out.classes, scheme)
        heat = heatmap(image, out.prob, top=predictor.post.heat_top(out.prob))
        write_png(out_dir / "overlays" / f"{name}.png", np.concatenate([tinted, heat], axis=1))
    if requested["attention"]:
        maps = predictor.attention_maps(image)
        strip = np.concatenate([heatmap(image, m) for m in maps.values()], axis=1)
        write_png(out_dir / "attention" / f"{name}.png", strip)


def _write_coco(path: Path, items: list[_Input], regions: dict, class_names: list[str]) -> Path:
    """``coco.json``: ``regions`` maps each item to its ``((H, W), regions)``."""
    from colonseg.data.annotations import coco_document

    images = [
        {"file_name": it.source, "height": regions[it][0][0], "width": regions[it][0][1],
         "regions": regions[it][1]}
        for it in items
    ]  # fmt: skip
    doc = coco_document(images, class_names)
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc)))

"""``run_predict``: images and folders → masks, probability maps and heat-map overlays on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from colonseg.data.datamodule import end_with_parent
from colonseg.data.io import (
    collect_images,
    read_image,
    remove_stale_temp,
    unique_stems,
    write_png,
)
from colonseg.data.labels import read_label
from colonseg.data.rle import submission_rows, write_submission
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError
from colonseg.viz.overlays import heatmap, overlay_prediction

__all__ = ["run_predict"]


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
) -> dict:
    """Predict every image; write ``masks/``, ``probs/`` and ``overlays/`` PNGs under ``out_dir``.

    Binary models write masks as 0/255 grey PNGs; multi-class models as RGB PNGs in their label
    scheme's colours (NeoPolyp: the Kaggle code, red neoplastic, green non-neoplastic) and tint
    each class in its colour on the overlay. ``probs/`` holds the polyp probability.

    ``save_attention`` also writes ``attention/<stem>.png``: the model's attention maps as heat
    maps side by side (in the order of ``Predictor.attention_maps``; ``attention_unet`` only).
    ``rle_csv`` writes every class map as a run-length-encoded Kaggle submission CSV
    (see :mod:`colonseg.data.rle`).

    Images are decoded by ``workers`` DataLoader processes (default: none for fewer than 64
    files, else up to 4) and predicted ``batch_size`` at a time. Unreadable files are skipped
    and reported in ``result["failed"]`` as ``(path, message)``.

    Every PNG is written atomically (a hidden temporary file renamed into place); the temporary
    files that a killed run left in the folders this run writes are deleted as it starts.
    ``skip_existing`` resumes such a run: an image whose outputs of every requested kind exist
    is not predicted again (listed in ``result["skipped"]``; its RLE rows are read back from
    its mask; ``area_fraction`` covers the images predicted in this run). The outputs are
    trusted as they are: after changing the model or its settings, run without it.
    """
    out_dir = Path(out_dir)
    if save_attention and not predictor.has_attention:
        raise ColonsegError(f"{predictor.meta.arch}: this architecture has no attention maps")
    files = collect_images(inputs)
    names = dict(zip(files, unique_stems([f.stem for f in files]), strict=True))
    requested = {"probs": save_probs, "overlays": save_overlays, "attention": save_attention}
    kinds = ["masks", *(kind for kind, on in requested.items() if on)]
    for kind in kinds:
        remove_stale_temp(out_dir / kind)
    if rle_csv is not None:
        remove_stale_temp(Path(rle_csv).parent, [Path(rle_csv).name])
    scheme = predictor.scheme
    done = {
        f for f in files
        if skip_existing and all((out_dir / k / f"{names[f]}.png").is_file() for k in kinds)
    }  # fmt: skip
    skipped = [f for f in files if f in done]
    rle_rows: dict[str, list] = {}
    for f in skipped if rle_csv is not None else []:
        classes = read_label(out_dir / "masks" / f"{names[f]}.png", scheme)
        rle_rows[names[f]] = submission_rows(names[f], classes, scheme.num_classes)
    todo = [f for f in files if f not in done]
    if workers is None:
        workers = 0 if len(todo) < 64 else min(4, os.cpu_count() or 1)
    loader = DataLoader(
        _ImageFiles(todo),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=end_with_parent,
    )
    written, failed, areas = [], [], {}
    bar = tqdm(total=len(todo), desc="predict", unit="image", disable=not progress)
    for batch in loader:
        failed += [(str(f), err) for f, _, err in batch if err is not None]
        good = [(f, image) for f, image, err in batch if err is None]
        outs = predictor.predict_batch([image for _, image in good]) if good else []
        for (f, image), out in zip(good, outs, strict=True):
            stem = names[f]
            write_png(out_dir / "masks" / f"{stem}.png", scheme.mask_image(out.classes))
            if save_probs:
                prob = np.round(out.prob * 255).astype(np.uint8)
                write_png(out_dir / "probs" / f"{stem}.png", prob)
            if save_overlays:
                tinted = overlay_prediction(image, out.classes, scheme)
                heat = heatmap(image, out.prob, top=predictor.post.heat_top(out.prob))
                pair = np.concatenate([tinted, heat], axis=1)
                write_png(out_dir / "overlays" / f"{stem}.png", pair)
            if save_attention:
                maps = predictor.attention_maps(image)
                strip = np.concatenate([heatmap(image, m) for m in maps.values()], axis=1)
                write_png(out_dir / "attention" / f"{stem}.png", strip)
            if rle_csv is not None:
                rle_rows[stem] = submission_rows(stem, out.classes, scheme.num_classes)
            areas[stem] = float(out.mask.mean())
            written.append(str(f))
        bar.update(len(batch))
    bar.close()
    if rle_csv is not None:
        write_submission(rle_csv, [row for f in files for row in rle_rows.get(names[f], [])])
    return {"out_dir": out_dir, "written": written, "failed": failed, "area_fraction": areas,
            "skipped": [str(f) for f in skipped]}  # fmt: skip

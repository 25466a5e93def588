"""``run_predict``: images and folders → masks, probability maps and heat-map overlays on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from colonseg.data.io import IMAGE_EXTENSIONS, read_image, write_png
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError
from colonseg.viz.overlays import heatmap, overlay

__all__ = ["collect_images", "run_predict"]


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(
                p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
        elif item.is_file():
            files.append(item)
        else:
            raise ColonsegError(f"{item}: no such file or folder")
    if not files:
        raise ColonsegError(f"{', '.join(map(str, inputs))}: no images found")
    return files


def _unique_stems(files: list[Path]) -> dict[Path, str]:
    names: dict[Path, str] = {}
    used: set[str] = set()
    for f in files:
        stem, k = f.stem, 1
        while stem in used:
            k += 1
            stem = f"{f.stem}_{k}"
        used.add(stem)
        names[f] = stem
    return names


def run_predict(
    predictor: Predictor,
    inputs: list[str | Path],
    out_dir: str | Path,
    save_probs: bool = True,
    save_overlays: bool = True,
    save_attention: bool = False,
    progress: bool = True,
) -> dict:
    """Predict every image; write ``masks/``, ``probs/`` and ``overlays/`` PNGs under ``out_dir``.

    ``save_attention`` also writes ``attention/<stem>.png``: the model's attention maps as heat
    maps side by side (in the order of ``Predictor.attention_maps``; ``attention_unet`` only).

    Unreadable files are skipped and reported in ``result["failed"]`` as ``(path, message)``.
    """
    out_dir = Path(out_dir)
    if save_attention and not predictor.has_attention:
        raise ColonsegError(f"{predictor.meta.arch}: this architecture has no attention maps")
    files = collect_images(inputs)
    names = _unique_stems(files)
    written, failed, areas = [], [], {}
    for f in tqdm(files, desc="predict", disable=not progress):
        try:
            image = read_image(f)
        except ColonsegError as exc:
            failed.append((str(f), str(exc)))
            continue
        out = predictor.predict(image)
        stem = names[f]
        write_png(out_dir / "masks" / f"{stem}.png", out.mask * 255)
        if save_probs:
            write_png(out_dir / "probs" / f"{stem}.png", np.round(out.prob * 255).astype(np.uint8))
        if save_overlays:
            pair = np.concatenate([overlay(image, out.mask), heatmap(image, out.prob)], axis=1)
            write_png(out_dir / "overlays" / f"{stem}.png", pair)
        if save_attention:
            maps = predictor.attention_maps(image)
            strip = np.concatenate([heatmap(image, m) for m in maps.values()], axis=1)
            write_png(out_dir / "attention" / f"{stem}.png", strip)
        areas[stem] = float(out.mask.mean())
        written.append(str(f))
    return {"out_dir": out_dir, "written": written, "failed": failed, "area_fraction": areas}

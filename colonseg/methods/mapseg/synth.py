"""``run_synth``: a grid of SIMPO examples (frame with lesion | lesion outline) to inspect."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from colonseg.data.io import read_image, write_png
from colonseg.methods.mapseg.simpo import Simpo, image_files, load_shapes, load_textures
from colonseg.viz.overlays import contours

__all__ = ["run_synth"]


def run_synth(
    frames: str | Path,
    out: str | Path,
    textures: str | Path | None = None,
    shapes: str | Path | None = None,
    fills: tuple[str, ...] = ("colon", "texture"),
    n: int = 12,
    seed: int = 0,
    tile: int = 256,
) -> Path:
    """Synthesise a lesion into ``n`` frames of ``frames`` and write them as one PNG grid.

    Each cell pairs the synthetic frame with a copy that outlines the lesion in yellow; frames
    are resized to ``tile`` pixels square.
    """
    files = image_files(frames)
    simpo = Simpo(
        textures=load_textures(textures) if textures else [],
        shapes=load_shapes(shapes) if shapes else [],
        fills=tuple(fills),
        p=1.0,
    )
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(files), size=min(n, len(files)), replace=False)
    cells = []
    for i in picks:
        image = cv2.resize(read_image(files[i]), (tile, tile), interpolation=cv2.INTER_AREA)
        synthetic, mask = simpo(image, rng, force=True)
        cells.append(np.concatenate([synthetic, contours(synthetic, mask, thickness=2)], 1))
    cols = 2
    while len(cells) % cols:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.concatenate(cells[r : r + cols], 1) for r in range(0, len(cells), cols)]
    return write_png(out, np.concatenate(rows, 0))

"""``run_check``: what a dataset folder holds and what is wrong with it, without training."""

from __future__ import annotations

from pathlib import Path

from colonseg.data.io import read_image, read_mask
from colonseg.data.layouts import LAYOUTS, detect_layout, read_split
from colonseg.errors import ColonsegError

__all__ = ["run_check"]


def run_check(path: str | Path, layout: str = "auto", split: str | None = None) -> dict:
    """Return ``{"layout", "n_pairs", "problems": [one line per problem]}``."""
    root = Path(path)
    name = detect_layout(root) if layout == "auto" else layout
    pairs = LAYOUTS.get(name)(root)
    problems = []
    if split is not None:
        ids = {p.id for p in pairs}
        stems = read_split(root, split)
        problems += [f"{split}: stem '{s}' has no image" for s in stems if s not in ids]
        pairs = [p for p in pairs if p.id in set(stems)]
    for p in pairs:
        if p.mask is None:
            problems.append(f"{p.image}: no matching mask")
            continue
        try:
            image, mask = read_image(p.image), read_mask(p.mask)
        except ColonsegError as exc:
            problems.append(str(exc))
            continue
        if image.shape[:2] != mask.shape:
            problems.append(
                f"{p.mask}: mask {mask.shape[1]}x{mask.shape[0]} differs from image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
    return {"layout": name, "n_pairs": len(pairs), "problems": problems}

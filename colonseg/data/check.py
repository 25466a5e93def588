"""``run_check``: what a dataset folder holds and what is wrong with it, without training.

Every image and mask is read the way training reads it, so a mask the readers refuse (an
ambiguous encoding: an 'ignore' value, several unknown colours) is listed with the reader's
message. Per mask it also reports:

- problems (exit 1): a mask that is foreground everywhere (constant: an inverted or misread
  encoding), and a dataset whose masks are all empty (all background: a misread encoding);
- warnings (exit 0): an empty mask among labelled ones (fine for a frame without a polyp, but
  worth a look).

A folder of images without any mask (``images/`` alone, or images directly in the folder, like
PolypGen's normal frames) is a valid unlabelled dataset: its images are checked and it is
reported as ``unlabelled: N images``. Read with ``layout="negatives"`` its masks are empty by
design: neither the warning nor the problem about empty masks applies.
"""

from __future__ import annotations

from pathlib import Path

from colonseg.data.io import collect_images, read_image, read_mask
from colonseg.data.layouts import LAYOUTS, Pair, detect_layout, read_split
from colonseg.errors import ColonsegError

__all__ = ["run_check"]


def run_check(path: str | Path, layout: str = "auto", split: str | None = None) -> dict:
    """Return ``{"layout", "n_pairs", "unlabelled", "problems", "warnings"}``: one line per
    problem or warning; ``unlabelled`` is True (and ``n_pairs`` the number of images) when no
    image has a mask."""
    root = Path(path)
    name, pairs = _pairs(root, layout)
    problems: list[str] = []
    warnings: list[str] = []
    if split is not None:
        ids = {p.id for p in pairs}
        stems = read_split(root, split)
        problems += [f"{split}: stem '{s}' has no image" for s in stems if s not in ids]
        pairs = [p for p in pairs if p.id in set(stems)]
    unlabelled = bool(pairs) and all(p.mask is None for p in pairs)
    empty = 0
    for p in pairs:
        if p.mask is None and not unlabelled:
            problems.append(f"{p.image}: no matching mask")
            continue
        try:
            image = read_image(p.image)
            mask = None if unlabelled else read_mask(p.mask)
        except ColonsegError as exc:
            problems.append(str(exc))
            continue
        if mask is None:
            continue
        if image.shape[:2] != mask.shape:
            problems.append(
                f"{p.mask}: mask {mask.shape[1]}x{mask.shape[0]} differs from image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        if not mask.any():
            empty += 1
            if name != "negatives":  # empty by design there
                warnings.append(f"{p.mask}: empty mask (all background)")
        elif mask.all():
            problems.append(
                f"{p.mask}: constant mask (every pixel foreground): an inverted mask or a "
                "misread encoding"
            )
    labelled = sum(p.mask is not None for p in pairs)
    if labelled > 1 and empty == labelled and name != "negatives":
        problems.append(
            f"{root}: all {labelled} masks are empty (all background): a misread mask encoding?"
        )
    return {"layout": name, "n_pairs": len(pairs), "unlabelled": unlabelled,
            "problems": problems, "warnings": warnings}  # fmt: skip


def _pairs(root: Path, layout: str) -> tuple[str, list[Pair]]:
    """The layout's pairs; a folder no layout matches but that holds images is unlabelled."""
    if layout != "auto":
        return layout, LAYOUTS.get(layout)(root)
    try:
        name = detect_layout(root)
    except ColonsegError as exc:
        try:
            images = collect_images([root])
        except ColonsegError:
            raise exc from None
        return "images", [Pair(str(p.relative_to(root).with_suffix("")), p, None) for p in images]
    return name, LAYOUTS.get(name)(root)

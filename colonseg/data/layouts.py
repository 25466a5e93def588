"""Readers for the official folder layouts of the polyp and gland datasets.

Each layout is a function ``root -> list[Pair]`` registered under its name in ``LAYOUTS``;
:func:`detect_layout` picks one from what the folder holds, and :func:`find_pairs` adds the
optional split file and the checks (missing partners, duplicate stems).

Layouts (paths relative to the dataset root):

=================  ====================================================================
``kvasir_seg``     ``images/*.jpg`` + ``masks/*.jpg`` (+ ``kavsir_bboxes.json``)
``cvc_clinicdb``   ``images/N.png`` + ``masks/N.png`` (our copy) or the official
                   ``Original/N.tif`` + ``Ground Truth/N.tif``
``cvc_colondb``    ``N.tiff`` + ``pN.tiff`` in one folder (or in ``images/``/``masks/``)
``etis``           ``ETIS-LaribPolypDB/N.tif`` + ``Ground Truth/pN.tif``
``pranet``         ``TrainDataset/{image,mask}`` or ``TestDataset/<name>/{images,masks}``
``bkai``           ``train/train/*.jpeg`` + ``train_gt/train_gt/*.jpeg``
``glas``           flat ``<name>.{bmp,jpg,png}`` + ``<name>_anno.{bmp,png}`` (instance labels);
                   splits by name: ``train``, ``testA``, ``testB``, ``test`` (A + B)
``folder``         ``images/`` + ``masks/`` (or ``image/`` + ``mask/``) with matching stems
``mvtec``          MVTec AD / MAPSeg: ``test/<defect>/N.png`` + ``ground_truth/<defect>/N_mask.png``
                   (``test/good`` holds normal frames and is left out; ids ``<defect>_N``)
=================  ====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colonseg.data.io import IMAGE_EXTENSIONS
from colonseg.errors import ColonsegError
from colonseg.registry import Registry

__all__ = ["LAYOUTS", "Pair", "detect_layout", "find_pairs", "hold_out", "read_split"]

LAYOUTS = Registry("dataset layout")


@dataclass(frozen=True)
class Pair:
    """One image and its annotation (``mask`` is None for unlabelled images)."""

    id: str
    image: Path
    mask: Path | None


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _first_dir(root: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _match(
    image_dir: Path, mask_dir: Path, mask_stem: Callable[[str], str] = lambda s: s
) -> list[Pair]:
    """Pair every image with the mask whose stem is ``mask_stem(image stem)``."""
    masks: dict[str, Path] = {}
    for m in _images(mask_dir):
        if m.stem in masks:
            raise ColonsegError(f"{m}: duplicate mask stem '{m.stem}' (also {masks[m.stem]})")
        masks[m.stem] = m
    pairs, seen = [], {}
    for img in _images(image_dir):
        if img.stem in seen:
            raise ColonsegError(f"{img}: duplicate image stem '{img.stem}' (also {seen[img.stem]})")
        seen[img.stem] = img
        pairs.append(Pair(img.stem, img, masks.get(mask_stem(img.stem))))
    return pairs


@LAYOUTS.register("folder")
def folder_layout(root: Path) -> list[Pair]:
    image_dir = _first_dir(root, ("images", "image", "Images"))
    mask_dir = _first_dir(root, ("masks", "mask", "Masks", "labels", "gt", "GT"))
    if image_dir is None:
        raise ColonsegError(f"{root}: no images/ folder (expected images/ and masks/)")
    return _match(image_dir, mask_dir or root / "masks")


LAYOUTS.register("kvasir_seg")(folder_layout)
LAYOUTS.register("pranet")(folder_layout)


@LAYOUTS.register("cvc_clinicdb")
def cvc_clinicdb_layout(root: Path) -> list[Pair]:
    if (root / "Original").is_dir():
        return _match(root / "Original", root / "Ground Truth")
    return folder_layout(root)


@LAYOUTS.register("cvc_colondb")
def cvc_colondb_layout(root: Path) -> list[Pair]:
    image_dir = _first_dir(root, ("images",)) or root
    mask_dir = _first_dir(root, ("masks",)) or root
    if image_dir == mask_dir:
        images = [p for p in _images(root) if not p.stem.startswith("p")]
        masks = {p.stem: p for p in _images(root) if p.stem.startswith("p")}
        return [Pair(p.stem, p, masks.get("p" + p.stem)) for p in images]
    return _match(image_dir, mask_dir, lambda s: s if (mask_dir / s).exists() else "p" + s)


@LAYOUTS.register("etis")
def etis_layout(root: Path) -> list[Pair]:
    image_dir = _first_dir(root, ("ETIS-LaribPolypDB", "images")) or root
    mask_dir = _first_dir(root, ("Ground Truth", "GroundTruth", "masks"))
    if mask_dir is None:
        raise ColonsegError(f"{root}: ETIS layout needs a 'Ground Truth' folder")
    return _match(image_dir, mask_dir, lambda s: "p" + s)


@LAYOUTS.register("bkai")
def bkai_layout(root: Path) -> list[Pair]:
    return _match(root / "train" / "train", root / "train_gt" / "train_gt")


_GLAS_ANNO = re.compile(r"_anno$")


_GLAS_PARTS = {"train": ("train",), "testA": ("testA",), "testB": ("testB",),
               "test": ("testA", "testB")}  # fmt: skip


def _glas_part(split: str) -> tuple[str, ...]:
    """GlaS splits by name prefix (``train``, ``testA``, ``testB``, ``test`` = A + B); () when
    ``split`` is a split file instead."""
    return _GLAS_PARTS.get(split, ()) if not Path(split).suffix else ()


@LAYOUTS.register("glas")
def glas_layout(root: Path) -> list[Pair]:
    files = _images(root)
    annos = {p.stem: p for p in files if _GLAS_ANNO.search(p.stem)}
    return [Pair(p.stem, p, annos.get(p.stem + "_anno")) for p in files if p.stem not in annos]


@LAYOUTS.register("mvtec")
def mvtec_layout(root: Path) -> list[Pair]:
    pairs = []
    for defect in sorted(d for d in (root / "test").iterdir() if d.is_dir() and d.name != "good"):
        masks = {
            m.stem.removesuffix("_mask"): m for m in _images(root / "ground_truth" / defect.name)
        }
        pairs += [Pair(f"{defect.name}_{p.stem}", p, masks.get(p.stem)) for p in _images(defect)]
    return pairs


def detect_layout(root: str | Path) -> str:
    """Guess the layout name of a dataset folder from what it holds."""
    root = Path(root)
    if not root.is_dir():
        raise ColonsegError(f"{root}: dataset folder not found")
    if (root / "train" / "train").is_dir() and (root / "train_gt" / "train_gt").is_dir():
        return "bkai"
    if (root / "Original").is_dir() and (root / "Ground Truth").is_dir():
        return "cvc_clinicdb"
    if (root / "ETIS-LaribPolypDB").is_dir():
        return "etis"
    if (root / "test").is_dir() and (root / "ground_truth").is_dir():
        return "mvtec"
    if (root / "kavsir_bboxes.json").exists():
        return "kvasir_seg"
    if _first_dir(root, ("images", "image", "Images")) is not None:
        return "folder"
    names = {p.stem for p in _images(root)}
    if any(n.endswith("_anno") for n in names):
        return "glas"
    if any(n.startswith("p") and n[1:] in names for n in names):
        return "cvc_colondb"
    raise ColonsegError(
        f"{root}: unknown dataset layout (expected images/ + masks/, or one of "
        f"{', '.join(LAYOUTS.names())}); pass the layout name explicitly"
    )


def read_split(root: Path, split: str | Path) -> list[str]:
    """Read a split file (one stem per line): a path, or a name under ``root/splits``."""
    path = Path(split)
    candidates = [path, root / path, root / "splits" / path, root / "splits" / f"{split}.txt"]
    for c in candidates:
        if c.is_file():
            stems = [ln.strip() for ln in c.read_text().splitlines() if ln.strip()]
            return [
                Path(s).stem if Path(s).suffix.lower() in IMAGE_EXTENSIONS else s for s in stems
            ]
    raise ColonsegError(f"{split}: split file not found (looked in {root}/splits)")


def hold_out(items: list, fraction: float, seed: int = 0) -> tuple[list, list]:
    """A fixed, seeded ``(kept, held_out)`` split: ``fraction`` of ``items`` held out (at least
    one when ``fraction > 0`` and there are two or more), both in their original order."""
    order = np.random.default_rng(seed).permutation(len(items))
    n = int(round(fraction * len(items)))
    if fraction > 0 and len(items) > 1:
        n = min(max(n, 1), len(items) - 1)
    return [items[i] for i in sorted(order[n:])], [items[i] for i in sorted(order[:n])]


def find_pairs(
    root: str | Path,
    layout: str = "auto",
    split: str | Path | None = None,
    require_masks: bool = True,
) -> list[Pair]:
    """List the image/mask pairs of a dataset, restricted to a split if given.

    Raises:
        ColonsegError: unknown layout, a split stem with no image, or (with ``require_masks``)
            an image without its mask.
    """
    root = Path(root)
    name = detect_layout(root) if layout == "auto" else layout
    pairs = LAYOUTS.get(name)(root)
    if split is not None and name == "glas" and _glas_part(str(split)):
        pairs = [p for p in pairs if p.id.split("_")[0] in _glas_part(str(split))]
    elif split is not None:
        by_id = {p.id: p for p in pairs}
        stems = read_split(root, split)
        missing = [s for s in stems if s not in by_id]
        if missing:
            raise ColonsegError(
                f"{split}: {len(missing)} stems have no image in {root}: {missing[:3]}"
            )
        pairs = [by_id[s] for s in stems]
    if not pairs:
        raise ColonsegError(f"{root}: no images found ({name} layout)")
    if require_masks:
        for p in pairs:
            if p.mask is None:
                raise ColonsegError(f"{p.image}: no matching mask found ({name} layout)")
    return pairs

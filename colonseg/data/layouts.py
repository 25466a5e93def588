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
``coco``           polygons: CVAT's "COCO 1.0" export ``annotations/instances_<subset>.json`` +
                   ``images/`` (or ``images/<subset>/``), or one ``coco.json`` (what
                   ``predict --export coco`` writes) beside or above the images
``labelme``        polygons: LabelMe's ``<stem>.json`` beside each image, in the folder or in
                   ``images/``; an image without its JSON has no mask
``negatives``      frames known to hold no polyp (``images/`` or the folder itself), e.g.
                   PolypGen's normal frames or a clinic's normal mucosa: every image is paired
                   with an empty mask. Never detected: name it (``layout: negatives``), so a
                   folder whose masks went missing is not read as "no polyp anywhere"
=================  ====================================================================

The empty masks of ``negatives`` are the same kind of cached file: one all-zero PNG per image
size, ``<COLONSEG_CACHE>/annotations/empty/<H>x<W>.png``, shared by every image of that size.

Polygon layouts (``coco``, ``labelme``; see :mod:`colonseg.data.annotations`) have no mask
files, while everything downstream (the decode-once cache, ``datasets check``, evaluation)
reads masks from files. So the layout rasterises each JSON once, at the image size the JSON
declares (an image of another size is refused: resized after annotating), into PNG masks
under ``<COLONSEG_CACHE>/annotations/<key>/<id>.png``, written atomically, and its pairs point
at those: the rest of colonseg is unchanged. ``<key>`` hashes the JSON's bytes and the class
order, so an edited annotation gets new masks and old ones are never read. The class order:
labels that are all classes of a multi-class scheme (``neoplastic``, ``non-neoplastic``) are
written as that scheme's class indices (0, 1, 2); a single label (any name: ``polyp``,
``Polyp``) is written as a 0/255 binary mask; other label sets are refused (a mask layout
holds one class or one scheme's classes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colonseg.data.annotations import rasterize, read_coco, read_labelme
from colonseg.data.io import IMAGE_EXTENSIONS, file_digest, write_png
from colonseg.errors import ColonsegError
from colonseg.registry import Registry

__all__ = ["LAYOUTS", "Pair", "detect_layout", "find_pairs", "hold_out", "read_split"]

LAYOUTS = Registry("dataset layout")
SHIPPED_SPLITS = Path(__file__).resolve().parent / "splits"  # <dataset folder>/<split>.txt


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
    image_dir: Path, mask_dir: Path | None, mask_stem: Callable[[str], str] = lambda s: s
) -> list[Pair]:
    """Pair every image with the mask whose stem is ``mask_stem(image stem)``."""
    masks: dict[str, Path] = {}
    for m in _images(mask_dir) if mask_dir is not None else []:
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


def _coco_files(root: Path) -> list[Path]:
    found = sorted((root / "annotations").glob("instances_*.json"))
    return found or [root / "coco.json"] * (root / "coco.json").is_file()


def _polygon_classes(labels: set[str], source: Path) -> tuple[list[str], bool]:
    """Class names in class-map order, and whether masks are binary (see the module docstring)."""
    from colonseg.data.labels import SCHEMES  # imports torch: not at CLI start-up

    for scheme in SCHEMES.values():
        if scheme.multiclass and labels and labels <= set(scheme.class_names[1:]):
            return list(scheme.class_names[1:]), False
    if len(labels) <= 1:
        return sorted(labels), True
    schemes = "; ".join(f"{s.name}: {', '.join(s.class_names[1:])}" for s in SCHEMES.values())
    raise ColonsegError(
        f"{source}: labels {', '.join(sorted(labels))}: a dataset's polygons must be of one "
        f"class, or the classes of one label scheme ({schemes})"
    )


def _image_size(image: Path) -> tuple[int, int]:
    """``(height, width)`` of an image as read (upright), from its header."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            w, h = im.size
            turned = im.getexif().get(274, 1) in (5, 6, 7, 8)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise ColonsegError(f"{image}: unreadable image ({type(exc).__name__})") from None
    return (w, h) if turned else (h, w)


def _check_size(image: Path, h: int, w: int, source: Path) -> None:
    """Refuse an annotation whose declared size is not the image's (upright, as read)."""
    try:
        size = _image_size(image)
    except ColonsegError:  # an unreadable image is reported when it is read
        return
    if size != (h, w):
        raise ColonsegError(f"{source}: {image.name} is {size[1]}x{size[0]} but its annotation "
                            f"is for {w}x{h} (image resized after annotating?)")  # fmt: skip


def _mask_files(jsons: list[Path], items: list[tuple], labels: set[str]) -> dict[str, Path]:
    """Rasterise ``(id, height, width, regions)`` items into cached PNG masks, keyed by the
    bytes of the ``jsons`` they come from and the class order."""
    from colonseg.data.cache import default_cache_dir  # cache imports this module

    names, binary = _polygon_classes(labels, jsons[0].parent)
    key = hashlib.sha256(f"{names}|{binary}|v1".encode())
    for js in jsons:
        key.update(f"|{js.name}:{file_digest(js)}".encode())
    folder = default_cache_dir() / "annotations" / key.hexdigest()[:16]
    masks = {}
    for id_, h, w, regions in items:
        masks[id_] = path = folder / f"{id_}.png"
        if not path.is_file():
            classes = rasterize(regions, h, w, names)
            write_png(path, (classes > 0).astype(np.uint8) * 255 if binary else classes)
    return masks


@LAYOUTS.register("coco")
def coco_layout(root: Path) -> list[Pair]:
    files = _coco_files(root)
    if not files:
        raise ColonsegError(f"{root}: no annotations/instances_*.json or coco.json (COCO layout)")
    items, images = [], {}
    for js in files:
        subset = js.stem.removeprefix("instances_")
        for name, (h, w, regions) in read_coco(js).items():
            looked = [root / "images" / name, root / "images" / subset / name,
                      js.parent / name, root / name]  # fmt: skip
            image = next((p for p in looked if p.is_file()), None)
            if image is None:
                raise ColonsegError(f"{js}: image '{name}' not found (looked in {root}/images, "
                                    f"{root}/images/{subset}, {js.parent})")  # fmt: skip
            if image.stem in images:
                raise ColonsegError(
                    f"{js}: duplicate image stem '{image.stem}' (also {images[image.stem]})"
                )
            _check_size(image, h, w, js)
            images[image.stem] = image
            items.append((image.stem, h, w, regions))
    labels = {label for *_, regions in items for label, _ in regions}
    masks = _mask_files(files, items, labels)
    return [Pair(id_, images[id_], masks[id_]) for id_, *_ in items]


def _labelme_folder(root: Path) -> Path:
    images = root / "images"
    return images if images.is_dir() and any(images.glob("*.json")) else root


@LAYOUTS.register("labelme")
def labelme_layout(root: Path) -> list[Pair]:
    folder = _labelme_folder(root)
    pairs = _match(folder, None)  # images (duplicate stems refused); masks from the JSONs
    images = {p.id: p.image for p in pairs}
    jsons = [folder / f"{p.id}.json" for p in pairs if (folder / f"{p.id}.json").is_file()]
    items = [(js.stem, *read_labelme(js)[1:]) for js in jsons]
    for id_, h, w, _ in items:
        _check_size(images[id_], h, w, folder / f"{id_}.json")
    labels = {label for *_, regions in items for label, _ in regions}
    masks = _mask_files(jsons, items, labels) if jsons else {}
    return [Pair(p.id, p.image, masks.get(p.id)) for p in pairs]


@LAYOUTS.register("negatives")
def negatives_layout(root: Path) -> list[Pair]:
    from colonseg.data.cache import default_cache_dir  # cache imports this module

    folder = _first_dir(root, ("images", "image", "Images")) or root
    pairs = _match(folder, None)  # images, duplicate stems refused
    empty = default_cache_dir() / "annotations" / "empty"
    masks: dict[tuple[int, int], Path] = {}
    out = []
    for p in pairs:
        size = _image_size(p.image)
        if size not in masks:
            masks[size] = path = empty / f"{size[0]}x{size[1]}.png"
            if not path.is_file():
                write_png(path, np.zeros(size, np.uint8))
        out.append(Pair(p.id, p.image, masks[size]))
    return out


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
    if _first_dir(root, ("masks", "mask", "Masks")) is None:
        if _coco_files(root):
            return "coco"
        folder = _labelme_folder(root)
        if any((folder / f"{p.stem}.json").is_file() for p in _images(folder)):
            return "labelme"
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
    """Read a split file (one stem per line): a path, or a name under ``root/splits``, or one
    that colonseg ships for a public dataset of ``root``'s folder name (``SHIPPED_SPLITS``)."""
    path = Path(split)
    candidates = [path, root / path, root / "splits" / path, root / "splits" / f"{split}.txt",
                  SHIPPED_SPLITS / root.name / f"{split}.txt"]  # fmt: skip
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

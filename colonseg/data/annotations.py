"""Masks as polygons, and back: the COCO and LabelMe JSON that CVAT and LabelMe open and export.

Conventions (one for every reader and writer here):

- A *region* is ``(label, polygon)``: a class name and an ``(N, 2) float64`` array of x, y
  pixel coordinates, ``N >= 3``. Coordinates are pixel centres, as ``cv2.findContours`` gives
  them and as CVAT's and LabelMe's own mask tools draw them: pixel ``(x, y)`` is inside a polygon
  through ``(x, y)``. :func:`rasterize` rounds vertices to the nearest pixel and fills with
  ``cv2.fillPoly``, which includes the outline, so :func:`mask_polygons` → :func:`rasterize`
  gives the mask back exactly (holes aside).
- *Holes are filled.* A COCO polygon list is a union (a second polygon adds area, it cannot
  subtract it) and a LabelMe shape is one outline, so neither expresses a hole without tricks
  CVAT and LabelMe do not undo. :func:`mask_polygons` writes each region's outer contour; a mask
  with a hole (a ring) comes back with the hole filled. Polyp and gland masks are solid, so this
  costs nothing in practice. Regions nested inside another's hole keep their class: larger
  polygons are filled first (:func:`rasterize`).
- Class maps are ``(H, W) uint8``, 0 = background, ``k`` = ``class_names[k - 1]``: the
  foreground names of a label scheme (``SCHEMES["binary"].class_names[1:] == ("polyp",)``,
  neopolyp ``("neoplastic", "non-neoplastic")``), as checkpoints store them.
- COCO RLE segmentations (``iscrowd: 1``; CVAT writes them for brush masks) are decoded here,
  uncompressed (``counts`` a list) and compressed (``counts`` a string, pycocotools' format),
  without pycocotools, then turned into polygons like any mask (holes filled).

Readers refuse, with one line naming the file and the problem: unreadable JSON, missing keys,
polygons with fewer than 3 points, coordinates more than :data:`MARGIN` pixels outside the image
or not finite, labels :func:`rasterize` does not know, and shapes that are not areas.

Example:
    >>> regions = class_regions(classes, ["polyp"])              # [("polyp", (N, 2)), ...]
    >>> doc = labelme_document("a.png", *classes.shape, regions)  # json.dump(doc, ...)
    >>> rasterize(read_labelme("a.json")[3], *classes.shape, ["polyp"])  # == classes
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from colonseg.errors import ColonsegError

__all__ = [
    "MARGIN",
    "class_regions",
    "coco_document",
    "labelme_document",
    "mask_polygons",
    "rasterize",
    "read_coco",
    "read_labelme",
]

#: How far outside the image (pixels) a vertex may lie before a polygon is refused: annotators
#: drag points a little past the border, but normalised or swapped coordinates land far off.
MARGIN = 2.0

Region = tuple[str, np.ndarray]


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """One polygon per connected region (8-connected) of a mask: its outer contour.

    Vertices are the contour's corners (``CHAIN_APPROX_SIMPLE``: straight runs keep their ends
    only, which :func:`rasterize` redraws pixel for pixel). A region thinner than a polygon (one
    pixel, or a one-pixel line) gets a small polygon around its pixels, so every region has one.

    Args:
        mask: ``(H, W)``, nonzero = foreground.

    Returns:
        ``(N, 2)`` float arrays of x, y (N >= 3), in ``cv2.findContours`` order.
    """
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:  # a pixel or a straight line: the hull of its pixels' inner squares
            corners = (pts[:, None, :] + np.array([[-0.4, -0.4], [0.4, -0.4], [0.4, 0.4],
                                                   [-0.4, 0.4]])).reshape(-1, 2)  # fmt: skip
            pts = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        polygons.append(pts)
    return polygons


def class_regions(classes: np.ndarray, class_names: list[str]) -> list[Region]:
    """A class map → ``(label, polygon)`` regions: class ``k`` is named ``class_names[k - 1]``.

    Raises:
        ColonsegError: the map holds a class with no name.
    """
    classes = np.asarray(classes)
    top = int(classes.max()) if classes.size else 0
    if top > len(class_names):
        raise ColonsegError(
            f"class map holds class {top} but only {len(class_names)} class names were given"
        )
    return [(name, poly) for k, name in enumerate(class_names, start=1)
            for poly in mask_polygons(classes == k)]  # fmt: skip


def rasterize(
    regions: list[Region], height: int, width: int, class_names: list[str], source: str = "regions"
) -> np.ndarray:
    """Fill regions into a class map ``(height, width) uint8`` (class k = ``class_names[k - 1]``).

    Larger polygons are filled first, so a region inside another's (filled) hole keeps its class.

    Raises:
        ColonsegError: a label not in ``class_names`` (``source`` names the file).
    """
    index = {name: k for k, name in enumerate(class_names, start=1)}
    out = np.zeros((height, width), np.uint8)
    by_area = sorted(regions, key=lambda r: -abs(_shoelace(r[1])))
    for label, poly in by_area:
        if label not in index:
            raise ColonsegError(
                f"{source}: unknown label '{label}' (expected {', '.join(class_names)})"
            )
        pts = np.floor(np.asarray(poly, np.float64) + 0.5).astype(np.int32)
        cv2.fillPoly(out, [pts.reshape(-1, 1, 2)], int(index[label]))
    return out


def coco_document(images: list[dict], categories: list[str]) -> dict:
    """A COCO instance-segmentation document (what CVAT's "COCO 1.0" import reads).

    Args:
        images: ``{"file_name", "height", "width", "regions": [(label, polygon), ...]}`` each.
        categories: the class names, in order; category ids are 1, 2, ...

    Returns:
        ``{"info", "licenses", "images", "annotations", "categories"}``: one annotation per
        region, ``segmentation`` ``[[x1, y1, x2, y2, ...]]``, ``area`` its filled pixel count,
        ``bbox`` ``[x, y, w, h]`` around the polygon, ``iscrowd`` 0.
    """
    cat_ids = {name: k for k, name in enumerate(categories, start=1)}
    out_images, annotations = [], []
    for image_id, im in enumerate(images, start=1):
        h, w = int(im["height"]), int(im["width"])
        out_images.append({"id": image_id, "file_name": str(im["file_name"]),
                           "height": h, "width": w})  # fmt: skip
        for label, poly in im["regions"]:
            if label not in cat_ids:
                raise ColonsegError(f"{im['file_name']}: label '{label}' is not a category "
                                    f"({', '.join(categories)})")  # fmt: skip
            poly = np.asarray(poly, np.float64)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            area = int(rasterize([(label, poly)], h, w, [label]).sum())
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": cat_ids[label],
                "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
                "area": area, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "iscrowd": 0,
            })  # fmt: skip
    return {
        "info": {"description": "colonseg"},  # optional in COCO; some importers expect them
        "licenses": [],
        "images": out_images,
        "annotations": annotations,
        "categories": [{"id": k, "name": n, "supercategory": ""} for n, k in cat_ids.items()],
    }


def labelme_document(image_name: str, height: int, width: int, regions: list[Region]) -> dict:
    """A LabelMe 5.x document for one image (saved beside it as ``<stem>.json``)."""
    shapes = [
        {"label": label, "points": np.asarray(poly, float).round(2).tolist(), "group_id": None,
         "description": "", "shape_type": "polygon", "flags": {}}
        for label, poly in regions
    ]  # fmt: skip
    return {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }


def read_coco(path: str | os.PathLike) -> dict[str, tuple[int, int, list[Region]]]:
    """Read a COCO document: ``{file_name: (height, width, [(label, polygon), ...])}``.

    Every image listed is returned, those without annotations with no regions. Polygon lists
    give one region per polygon; RLE segmentations are decoded and traced (holes filled).

    Raises:
        ColonsegError: bad JSON, missing keys, duplicate file names, an annotation of an unknown
            image or category, a segmentation that is empty (a box only) or malformed.
    """
    path = Path(path)
    doc = _load_json(path)
    try:
        cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        by_id: dict[int, tuple[str, int, int, list[Region]]] = {}
        names: set[str] = set()
        for im in doc["images"]:
            name, h, w = str(im["file_name"]), int(im["height"]), int(im["width"])
            if name in names or int(im["id"]) in by_id:
                raise ColonsegError(f"{path}: image '{name}' (id {im['id']}) is listed twice")
            names.add(name)
            by_id[int(im["id"])] = (name, h, w, [])
        for ann in doc["annotations"]:
            image_id, cat, seg = int(ann["image_id"]), int(ann["category_id"]), ann["segmentation"]
            where = f"{path}: annotation {ann.get('id', '?')}"
            if image_id not in by_id:
                raise ColonsegError(f"{where} refers to image id {image_id}, which is not listed")
            if cat not in cats:
                raise ColonsegError(f"{where} has category id {cat}, which is not listed")
            name, h, w, regions = by_id[image_id]
            for poly in _coco_polygons(seg, h, w, where):
                regions.append((cats[cat], _checked(poly, h, w, f"{where} ({name})")))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ColonsegError):
            raise
        raise ColonsegError(f"{path}: not a COCO document ({_why(exc)})") from None
    return {name: (h, w, regions) for name, h, w, regions in by_id.values()}


_AREA_SHAPES = ("polygon", "rectangle", "circle")


def read_labelme(path: str | os.PathLike) -> tuple[str, int, int, list[Region]]:
    """Read a LabelMe JSON: ``(imagePath, height, width, [(label, polygon), ...])``.

    ``polygon`` shapes are read as drawn; ``rectangle`` (two corners) and ``circle`` (centre and
    a point on the circle) become polygons. Other shapes (points, lines, masks) are refused.
    """
    path = Path(path)
    doc = _load_json(path)
    try:
        h, w = int(doc["imageHeight"]), int(doc["imageWidth"])
        regions = []
        for i, shape in enumerate(doc["shapes"]):
            kind = shape.get("shape_type") or "polygon"
            where = f"{path}: shape {i} ('{shape['label']}')"
            if kind not in _AREA_SHAPES:
                raise ColonsegError(f"{where} is a {kind}; only {', '.join(_AREA_SHAPES)} "
                                    "shapes are areas")  # fmt: skip
            pts = _points(shape["points"], where)
            if kind == "rectangle" and len(pts) == 2:
                (x0, y0), (x1, y1) = pts
                pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            elif kind == "circle" and len(pts) == 2:
                r = float(np.hypot(*(pts[1] - pts[0])))
                t = np.linspace(0, 2 * np.pi, max(16, int(2 * np.pi * r)), endpoint=False)
                pts = pts[0] + r * np.stack([np.cos(t), np.sin(t)], 1)
            regions.append((str(shape["label"]), _checked(pts, h, w, where)))
        image_path = str(doc["imagePath"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ColonsegError):
            raise
        raise ColonsegError(f"{path}: not a LabelMe document ({_why(exc)})") from None
    return image_path, h, w, regions


def _load_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ColonsegError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ColonsegError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ColonsegError(f"{path}: not valid JSON for annotations (expected an object)")
    return doc


def _why(exc: Exception) -> str:
    return f"missing key {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]


def _points(values, where: str, flat: bool = False) -> np.ndarray:
    """``[[x, y], ...]`` (or ``[x1, y1, x2, y2, ...]`` with ``flat``) as ``(N, 2) float64``."""
    try:
        pts = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise ColonsegError(f"{where}: points are not numbers") from None
    if flat and pts.ndim == 1:
        pts = pts.reshape(-1, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ColonsegError(f"{where}: points must be [x, y] pairs")
    return pts


def _checked(pts: np.ndarray, h: int, w: int, where: str) -> np.ndarray:
    """A polygon of at least 3 finite points within :data:`MARGIN` pixels of the image."""
    if len(pts) < 3:
        raise ColonsegError(f"{where}: polygon has {len(pts)} points (at least 3 needed)")
    if not np.isfinite(pts).all():
        raise ColonsegError(f"{where}: polygon has coordinates that are not finite")
    lo, hi = pts.min(0), pts.max(0)
    if (lo < -MARGIN).any() or hi[0] > w - 1 + MARGIN or hi[1] > h - 1 + MARGIN:
        raise ColonsegError(
            f"{where}: polygon reaches x {lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g}, outside "
            f"the {w}x{h} image (wrong image, or normalised/swapped coordinates?)"
        )
    return pts


def _coco_polygons(seg, h: int, w: int, where: str) -> list[np.ndarray]:
    if isinstance(seg, dict):  # RLE
        size = [int(v) for v in seg["size"]]
        if size != [h, w]:
            raise ColonsegError(f"{where}: RLE size {size} differs from the image's [{h}, {w}]")
        return mask_polygons(_decode_rle(seg["counts"], h, w, where))
    if not isinstance(seg, list) or not seg:
        raise ColonsegError(f"{where}: no segmentation (a box only?); masks need polygons")
    polygons = []
    for flat in seg:
        if not isinstance(flat, list) or len(flat) % 2:
            raise ColonsegError(f"{where}: a polygon must be a flat list [x1, y1, x2, y2, ...]")
        polygons.append(_points(flat, where, flat=True))
    return polygons


def _decode_rle(counts, h: int, w: int, where: str) -> np.ndarray:
    """COCO RLE → ``(h, w) uint8``: alternating runs of 0 and 1 in column-major order."""
    if isinstance(counts, str):
        counts = _rle_from_string(counts, where)
    runs = np.asarray(counts, np.int64)
    if runs.ndim != 1 or (runs < 0).any() or runs.sum() != h * w:
        raise ColonsegError(f"{where}: RLE counts do not cover the {w}x{h} image")
    values = np.arange(len(runs)) % 2
    return np.repeat(values, runs).astype(np.uint8).reshape(w, h).T.copy()


def _rle_from_string(s: str, where: str) -> list[int]:
    """pycocotools' compressed counts (``rleFrString`` in maskApi.c): 5-bit groups offset by 48,
    0x20 = more groups follow, 0x10 in the last group = negative; counts after the second are
    stored as differences to the count two before."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise ColonsegError(f"{where}: RLE counts string is truncated")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ColonsegError(f"{where}: RLE counts string has an invalid character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _shoelace(poly: np.ndarray) -> float:
    x, y = np.asarray(poly, np.float64).T
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

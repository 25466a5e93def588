"""Box-labelled samples: 2-D images (PNG/JPEG/TIFF) and NIfTI volumes (one sample per slice).

Boxes come from, in order: a Kvasir-SEG ``kavsir_bboxes.json`` beside the images (``boxes:
auto`` or ``json``), else the masks — one box per connected region, which simulates box labels
(``boxes: mask``); ``jitter`` moves each side by up to that fraction of the box size, as a sloppy
annotator would. Masks are read only to derive boxes and to report Dice, never to train.

NIfTI datasets: ``imagesTr/`` + ``labelsTr/`` (Medical Segmentation Decathlon) or ``images/`` +
``masks/`` holding ``*.nii``/``*.nii.gz`` with matching names; slices along the last axis that
hold foreground become samples, their intensities windowed to the 0.5–99.5 percentiles of the
volume.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colonseg.data.boxes import mask_boxes
from colonseg.data.io import read_image, read_mask
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.errors import ColonsegError

__all__ = [
    "BoxSample",
    "collect_samples",
    "jitter_boxes",
    "read_sample",
    "read_sample_mask",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class BoxSample:
    """One 2-D image (or NIfTI slice), its boxes ``(K, 4)`` ``x0, y0, x1, y1`` in image pixels,
    and its mask file (for Dice only; may be None)."""

    id: str
    image: Path
    mask: Path | None
    boxes: np.ndarray
    shape: tuple[int, int]  # the image's (H, W)
    slice: int | None = None  # NIfTI: index along the last axis


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _nifti_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


@functools.lru_cache(maxsize=4)  # the slices of one volume are read one after another
def _load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A volume turned to the closest canonical (RAS+) orientation, so that images and labels
    stored in different orientations still slice alike, and its affine; a trailing singleton
    4th axis is dropped, a real 4-D series is refused."""
    import nibabel as nib

    nib.imageglobals.logger.setLevel(logging.CRITICAL)  # header fix-up notes: errors say it
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        vol = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad files
        raise ColonsegError(
            f"{path}: not a readable NIfTI volume ({exc.__class__.__name__})"
        ) from None
    while vol.ndim > 3 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim == 2:
        vol = vol[..., None]
    if vol.ndim != 3:
        raise ColonsegError(
            f"{path}: expected a 2-D or 3-D volume, got shape {vol.shape} (split a 4-D series "
            "into one file per volume)"
        )
    return vol, img.affine


def _load_volume(path: Path) -> np.ndarray:
    return _load_nifti(path)[0]


def _window(slice2d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.clip((slice2d.astype(np.float32) - lo) / max(hi - lo, 1e-8), 0, 1)
    return np.repeat((x * 255).round().astype(np.uint8)[..., None], 3, axis=2)


@functools.lru_cache(maxsize=4)
def _window_limits(path: Path) -> tuple[float, float]:
    lo, hi = np.percentile(_load_volume(path), [0.5, 99.5])
    return float(lo), float(hi)


def read_sample_mask(sample: BoxSample) -> np.ndarray | None:
    """The sample's binary mask (None when it has no mask file)."""
    if sample.mask is None:
        return None
    if sample.slice is None:
        return read_mask(sample.mask)
    return (_load_volume(sample.mask)[..., sample.slice] > 0).astype(np.uint8)


def read_sample(sample: BoxSample) -> tuple[np.ndarray, np.ndarray | None]:
    """The sample's RGB uint8 image and its binary mask (None when it has no mask file)."""
    if sample.slice is None:
        image = read_image(sample.image)
    else:
        vol = _load_volume(sample.image)
        image = np.ascontiguousarray(_window(vol[..., sample.slice], *_window_limits(sample.image)))
    return image, read_sample_mask(sample)


def jitter_boxes(
    boxes: np.ndarray, fraction: float, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Move each side by a uniform offset up to ``fraction`` of the box's width/height."""
    if fraction <= 0 or len(boxes) == 0:
        return boxes
    h, w = shape
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1) + 1
    out = boxes + rng.uniform(-fraction, fraction, boxes.shape) * size
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1)
    out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1)
    return out.astype(np.float32)


def _json_boxes(root: Path) -> dict[str, tuple[np.ndarray, tuple[int, int]]] | None:
    path = root / "kavsir_bboxes.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return {
            k: (
                np.array(
                    [[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in v["bbox"]], np.float32
                ),
                (int(v["height"]), int(v["width"])),
            )
            for k, v in data.items()
        }
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ColonsegError(
            f"{path}: not a Kvasir-SEG box file ({exc.__class__.__name__})"
        ) from None


def _nifti_pairs(root: Path) -> list[tuple[Path, Path | None]] | None:
    for img_dir, mask_dir in (("imagesTr", "labelsTr"), ("images", "masks"), ("images", "labels")):
        images = sorted(p for p in (root / img_dir).glob("*") if _is_nifti(p))
        if images:
            masks = {_nifti_stem(p): p for p in (root / mask_dir).glob("*") if _is_nifti(p)}
            return [(p, masks.get(_nifti_stem(p))) for p in images]
    return None


def _nifti_samples(root: Path, pairs: list[tuple[Path, Path | None]]) -> list[BoxSample]:
    samples = []
    for image, mask in pairs:
        if mask is None:
            raise ColonsegError(f"{image}: no label volume beside it (boxes come from labels)")
        (labels, label_affine), (volume, affine) = _load_nifti(mask), _load_nifti(image)
        labels = labels > 0
        if labels.shape != volume.shape:
            raise ColonsegError(
                f"{mask}: label shape {labels.shape} differs from its image {volume.shape}"
            )
        if not np.allclose(label_affine, affine, atol=1e-3):
            raise ColonsegError(
                f"{mask}: its affine (orientation, spacing or origin) differs from its image's; "
                "resample the label onto the image grid"
            )
        for k in range(labels.shape[-1]):
            boxes = mask_boxes(labels[..., k])
            if len(boxes):
                name = f"{_nifti_stem(image)}_z{k:03d}"
                samples.append(BoxSample(name, image, mask, boxes, labels.shape[:2], k))
    if not samples:
        raise ColonsegError(f"{root}: no slice of any NIfTI label volume holds foreground")
    return samples


def collect_samples(source: DataSource, boxes: str = "auto") -> list[BoxSample]:
    """The box-labelled samples of a dataset folder (see the module doc).

    Args:
        boxes: ``auto`` (``kavsir_bboxes.json`` if present, else masks), ``json`` or ``mask``.
    """
    if boxes not in ("auto", "json", "mask"):
        raise ColonsegError(f"Unknown box source '{boxes}'. Available: auto, json, mask.")
    root = Path(source.path)
    nifti = _nifti_pairs(root)
    if nifti is not None:
        return _nifti_samples(root, nifti)
    pairs = find_pairs(root, source.layout, source.split, require_masks=boxes != "json")
    table = _json_boxes(root) if boxes in ("auto", "json") else None
    if boxes == "json" and table is None:
        raise ColonsegError(f"{root}: boxes: json but no kavsir_bboxes.json there")
    samples = []
    for p in pairs:
        if table is not None and p.id in table:
            b, shape = table[p.id]
        elif boxes == "json":
            raise ColonsegError(f"{root}/kavsir_bboxes.json: no box for image {p.id}")
        else:
            mask = read_mask(p.mask)
            b, shape = mask_boxes(mask), mask.shape
        samples.append(BoxSample(p.id, p.image, p.mask, b, tuple(shape)))
    return samples

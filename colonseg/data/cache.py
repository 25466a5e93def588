"""Decode-once cache: images and masks resized to the training size, kept as one ``.npz`` file.

CPU epochs then cost augmentation and the network only, never JPEG decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np

from colonseg.data.io import read_image, write_atomic
from colonseg.data.labels import LabelScheme, get_scheme, read_label
from colonseg.data.layouts import Pair
from colonseg.errors import ColonsegError

__all__ = ["default_cache_dir", "load_resized_pairs", "resize_labels", "resize_pair"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("COLONSEG_CACHE", Path.home() / ".cache" / "colonseg"))


def resize_labels(mask: np.ndarray, size: tuple[int, int], num_classes: int = 2) -> np.ndarray:
    """Resize a class map to ``size`` (W, H): each class's indicator linearly, then the argmax.

    Two classes reduce to thresholding the linearly resized mask at 0.5, so boundaries stay smooth
    instead of the blocky steps of nearest-neighbour resizing.
    """
    if num_classes <= 2:
        m = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        return (m >= 0.5).astype(np.uint8)
    onehot = (mask[..., None] == np.arange(num_classes)).astype(np.float32)
    return cv2.resize(onehot, size, interpolation=cv2.INTER_LINEAR).argmax(-1).astype(np.uint8)


def resize_pair(
    image: np.ndarray, mask: np.ndarray, size: int, num_classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (area) and its class map (see :func:`resize_labels`) to ``size x size``."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    img = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return img, resize_labels(mask, (size, size), num_classes)


def _key(pairs: list[Pair], size: int, scheme: LabelScheme) -> str:
    h = hashlib.sha1(f"{size}|{scheme.name}".encode())
    for p in pairs:
        for f in (p.image, p.mask):
            st = f.stat()
            h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode_all(pairs: list[Pair], size: int, scheme: LabelScheme) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(pairs), size, size, 3), np.uint8)
    masks = np.empty((len(pairs), size, size), np.uint8)
    for i, p in enumerate(pairs):
        img, mask = read_image(p.image), read_label(p.mask, scheme)
        if img.shape[:2] != mask.shape[:2]:
            raise ColonsegError(
                f"{p.mask}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                f"{img.shape[1]}x{img.shape[0]} ({p.image.name})"
            )
        images[i], masks[i] = resize_pair(img, mask, size, scheme.num_classes)
    return images, masks


def load_resized_pairs(
    pairs: list[Pair], size: int, cache_dir: str | Path | None = None, labels: str = "binary"
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``images (N, S, S, 3) uint8`` and class maps ``(N, S, S) uint8``, decoding once.

    Masks are read under the label scheme ``labels`` (see :mod:`colonseg.data.labels`). The cache
    key covers every file's path, size and modification time, the target size and the scheme, so
    a changed file is re-decoded. ``cache_dir=None`` uses ``$COLONSEG_CACHE`` or
    ``~/.cache/colonseg``.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    scheme = get_scheme(labels)
    path = folder / f"pairs_{_key(pairs, size, scheme)}.npz"
    if path.is_file():
        with np.load(path) as z:
            if json.loads(str(z["ids"])) == [p.id for p in pairs]:
                return z["images"], z["masks"]
    images, masks = _decode_all(pairs, size, scheme)
    ids = json.dumps([p.id for p in pairs])
    write_atomic(path, lambda tmp: np.savez(tmp, images=images, masks=masks, ids=ids))
    return images, masks

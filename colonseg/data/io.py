"""Reading images and masks robustly, and writing outputs atomically.

Every reader returns plain numpy arrays (images ``(H, W, 3) uint8`` RGB, masks ``(H, W) uint8``
in {0, 1}) or raise :class:`~colonseg.errors.ColonsegError` with a one-line message naming
the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from colonseg.errors import ColonsegError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "file_digest",
    "read_image",
    "read_instances",
    "read_mask",
    "write_png",
    "write_atomic",
    "binarize_mask",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 100_000_000  # decompression-bomb guard: 100 megapixels
_TIFF = (".tif", ".tiff")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = 65535 if arr.dtype.itemsize >= 2 and arr.max() > 255 else 255
        return (arr.astype(np.float64) * (255.0 / top)).round().astype(np.uint8)
    arr = arr.astype(np.float64)
    scale = 255.0 if arr.max() <= 1.0 else 1.0
    return np.clip(arr * scale, 0, 255).round().astype(np.uint8)


def _decode(path: Path) -> np.ndarray:
    """Decode any supported file into a uint8 array, (H, W) or (H, W, C) in RGB(A) order."""
    if not path.is_file():
        raise ColonsegError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ColonsegError(f"{path}: file is empty (0 bytes)")
    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is not None:
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    elif path.suffix.lower() in _TIFF:
        import tifffile

        try:
            arr = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise ColonsegError(f"{path}: cannot decode TIFF ({exc.__class__.__name__})") from None
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)
    if arr is None:
        raise ColonsegError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    if arr.ndim not in (2, 3) or arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise ColonsegError(
            f"{path}: unsupported image shape {arr.shape} (2-D images up to {MAX_PIXELS} pixels)"
        )
    return _to_uint8(arr)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB (grayscale is repeated, alpha dropped)."""
    arr = _decode(Path(path))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] >= 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def binarize_mask(arr: np.ndarray, label_map: bool = False) -> np.ndarray:
    """Binarise a decoded mask: threshold at 128, or nonzero for 0/1 masks and label maps.

    Colour masks count a pixel as foreground when any channel is >= 128 (so BKAI's red and green
    polyps are both foreground). ``label_map=True`` (lossless single-channel files whose values
    stay below 128, e.g. GlaS instance labels 0..k) makes every nonzero pixel foreground.
    """
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    if arr.max() <= 1 or (label_map and arr.max() < 128):
        return (arr > 0).astype(np.uint8)
    return (arr >= 128).astype(np.uint8)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as ``(H, W) uint8`` in {0, 1} (see :func:`binarize_mask` for the rule)."""
    path = Path(path)
    arr = _decode(path)
    lossless = path.suffix.lower() not in (".jpg", ".jpeg")
    return binarize_mask(arr, label_map=lossless and arr.ndim == 2)


def read_instances(path: str | os.PathLike) -> np.ndarray:
    """Read an instance-labelled annotation (GlaS: 0 background, 1..k one per gland) as
    ``(H, W) int32``; a binary 0/255 mask gets its connected regions as instances."""
    path = Path(path)
    arr = _decode(path)
    if arr.ndim == 3:
        if np.ptp(arr[..., :3].astype(np.int16), axis=-1).any():
            raise ColonsegError(f"{path}: colour annotation; expected instance labels (grey)")
        arr = arr[..., 0]
    if path.suffix.lower() in (".jpg", ".jpeg") or set(np.unique(arr)) <= {0, 255}:
        return cv2.connectedComponents(binarize_mask(arr), connectivity=8)[1].astype(np.int32)
    return arr.astype(np.int32)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (what caches key on: a changed file gets a new entry)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_png(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Write a ``(H, W)`` or RGB ``(H, W, 3)`` uint8 array as PNG, atomically."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ColonsegError(f"{path}: could not encode PNG")
    return write_atomic(path, lambda tmp: tmp.write_bytes(buf.tobytes()))

"""Reading images and masks robustly, and writing outputs atomically.

Every reader returns plain numpy arrays (images ``(H, W, 3) uint8`` RGB, masks ``(H, W) uint8``
in {0, 1}) or raise :class:`~colonseg.errors.ColonsegError` with a one-line message naming
the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from colonseg.errors import ColonsegError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "file_digest",
    "image_digest",
    "read_image",
    "read_instances",
    "read_mask",
    "unique_stems",
    "write_png",
    "write_atomic",
    "binarize_mask",
    "collect_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 100_000_000  # decompression-bomb guard: 100 megapixels
_TIFF = (".tif", ".tiff")
# OpenCV's codecs log every damaged file to stderr; the ColonsegError raised instead says it once
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


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


# EXIF orientation (tag 274) → the numpy steps that show the image the way viewers do
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _header(path: Path, max_pixels: int) -> tuple[int, bool]:
    """Read the header only (PIL opens lazily): refuse images over ``max_pixels`` before any
    pixel is decoded (a decompression bomb never reaches memory); return the EXIF orientation
    and whether the file is a palette image. Files PIL cannot identify return ``(1, False)`` and
    are left to the decoders."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            (w, h), palette = im.size, im.mode in ("P", "PA")
            orientation = int(im.getexif().get(274, 1) or 1)
    except Image.DecompressionBombError:
        w, h, palette, orientation = max_pixels + 1, 1, False, 1
    except Exception:  # noqa: BLE001 - unidentified or damaged header: the decoders decide
        return 1, False
    if w * h > max_pixels:
        raise ColonsegError(
            f"{path}: image too large ({w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is "
            f"{max_pixels / 1e6:.0f}; downscale it first)"
        )
    return (orientation if orientation in _ORIENT else 1), palette


def _decode(path: Path, max_pixels: int = MAX_PIXELS, palette_labels: bool = False) -> np.ndarray:
    """Decode any supported file into a uint8 array, (H, W) or (H, W, C) in RGB(A) order, turned
    upright by its EXIF orientation. ``palette_labels``: a palette image gives ``(H, W)`` 0/1,
    1 where the palette colour is not black (its indices are labels, not intensities)."""
    if not path.is_file():
        raise ColonsegError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ColonsegError(f"{path}: file is empty (0 bytes)")
    orientation, palette = _header(path, max_pixels)
    if palette and palette_labels:
        arr = _palette_foreground(path)
    else:
        arr = _decode_pixels(path)
    if arr.ndim not in (2, 3) or arr.shape[0] * arr.shape[1] > max_pixels:
        raise ColonsegError(
            f"{path}: unsupported image shape {arr.shape} (2-D images up to {max_pixels} pixels)"
        )
    if orientation != 1:
        arr = np.ascontiguousarray(_ORIENT[orientation](arr))
    return _to_uint8(arr)


def _palette_foreground(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            index = np.asarray(im.convert("P") if im.mode == "PA" else im)
            colours = np.asarray(im.getpalette() or [0, 0, 0], np.uint8).reshape(-1, 3)
    except Exception as exc:  # noqa: BLE001 - truncated palette PNGs fail while decoding
        raise ColonsegError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    coloured = np.zeros(256, np.uint8)
    coloured[: len(colours)] = colours.max(axis=1) > 0
    return coloured[index]


def _decode_pixels(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. a header claiming a size beyond OpenCV's limits
        arr = None
    if arr is not None:
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    elif path.suffix.lower() in _TIFF:
        import tifffile

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the error below says it in one line
                arr = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise ColonsegError(f"{path}: cannot decode TIFF ({exc.__class__.__name__})") from None
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)
    if arr is None or arr.size == 0:
        raise ColonsegError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    return arr


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB, upright by its EXIF orientation (grayscale is
    repeated, alpha dropped); images over ``max_pixels`` are refused before decoding."""
    arr = _decode(Path(path), max_pixels)
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
    arr = _decode(path, palette_labels=True)
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


def image_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's SHA-256: how a checkpoint names the images it was
    trained on (a copy or a renamed file is recognised; 64 bits make a collision negligible)."""
    return file_digest(path)[:16]


def unique_stems(stems: list[str]) -> list[str]:
    """The stems, a repeated one suffixed ``_2``, ``_3``... so that no two outputs collide."""
    out: list[str] = []
    for stem in stems:
        name, k = stem, 1
        while name in out:
            k += 1
            name = f"{stem}_{k}"
        out.append(name)
    return out


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


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files. Hidden files
    inside folders (``.name``: a write stopped midway leaves its hidden temporary file; macOS
    leaves ``._name``) are never read as inputs."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(
                p
                for p in item.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and not p.name.startswith(".")
                and p.is_file()
            )
        elif item.is_file():
            files.append(item)
        else:
            raise ColonsegError(f"{item}: no such file or folder")
    if not files:
        raise ColonsegError(f"{', '.join(map(str, inputs))}: no images found")
    return files

"""Reading images and masks robustly, and writing outputs atomically.

Every reader returns plain numpy arrays (images ``(H, W, 3) uint8`` RGB, masks ``(H, W) uint8``
in {0, 1}) or raises :class:`~colonseg.errors.ColonsegError` with a one-line message naming
the file; a file is never read as something it is not:

- channels: 1 (grey), 3 (RGB) or 4 (RGBA); any other count, and TIFFs holding several images
  (pages, a z-stack, a 5-band series), are refused.
- bit depth: deeper pixels are scaled by their real depth, declared (PNG ``sBIT``, TIFF
  ``BitsPerSample``) or inferred from the brightest pixel (10-bit data in a 16-bit PNG keeps its
  brightness); pixels of unknown scale are refused. The rules: :mod:`colonseg.data.headers`.
- masks: :func:`~colonseg.data.mask_encodings.binarize_mask` reads 0/1, 0/255, JPEG-noisy,
  palette, label-map, alpha-only and RGB class-colour masks, and refuses ambiguous encodings
  ('ignore' values, several unknown colours) with a message saying what was found.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from colonseg.data.headers import channel_message, read_header, significant_bits, to_uint8
from colonseg.data.mask_encodings import binarize_mask
from colonseg.errors import ColonsegError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "file_digest",
    "image_digest",
    "publish",
    "read_image",
    "read_instances",
    "read_mask",
    "temp_beside",
    "unique_stems",
    "write_png",
    "write_atomic",
    "collect_images",
    "remove_stale_temp",
]

_TEMP_NAME = re.compile(r"\.(?P<stem>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?")  # temp_beside's
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 100_000_000  # decompression-bomb guard: 100 megapixels
_TIFF = (".tif", ".tiff")
# OpenCV's codecs log every damaged file to stderr; the ColonsegError raised instead says it once
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


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


class _Pixels(NamedTuple):
    array: np.ndarray  # (H, W) or (H, W, C) with C in 1, 3, 4, as stored (not scaled)
    bits: int  # significant bits of integer pixels
    lossy: bool
    palette: np.ndarray | None  # (N, 3) colours when ``array`` holds palette indices


def _decode_stored(
    path: Path, max_pixels: int = MAX_PIXELS, palette_indices: bool = False
) -> _Pixels:
    """Decode a file into its stored pixels, upright by its EXIF orientation, checking the
    shape and channel count. ``palette_indices``: a palette image gives its indices."""
    if not path.is_file():
        raise ColonsegError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ColonsegError(f"{path}: file is empty (0 bytes)")
    head = read_header(path, max_pixels)
    palette, declared = None, head.bits
    if head.palette and palette_indices:
        arr, palette = _palette_indices(path)
    else:
        arr, by_opencv = _decode_pixels(path)
        if by_opencv and declared and path.suffix.lower() in _TIFF:
            declared = 16  # OpenCV scales a 12-bit TIFF up to 16 bits; tifffile does not
    if arr.ndim not in (2, 3) or arr.shape[0] * arr.shape[1] > max_pixels:
        raise ColonsegError(
            f"{path}: unsupported image shape {arr.shape} (2-D images up to {max_pixels} pixels)"
        )
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise ColonsegError(channel_message(path, arr.shape[2]))
    if head.orientation != 1:
        arr = np.ascontiguousarray(_ORIENT[head.orientation](arr))
    bits = 8
    if arr.dtype.kind in "ui":  # wider than 16 bits: kept for label maps, refused as images
        wide = arr.dtype.itemsize > 2
        bits = 8 * arr.dtype.itemsize if wide else significant_bits(arr, declared, path)
    return _Pixels(arr, bits, head.lossy, palette)


def _decode(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode any supported file into a uint8 array, (H, W) or (H, W, C) in RGB(A) order, turned
    upright by its EXIF orientation and scaled by its bit depth."""
    pixels = _decode_stored(path, max_pixels)
    return to_uint8(pixels.array, pixels.bits, path)


def _palette_indices(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            index = np.asarray(im.convert("P") if im.mode == "PA" else im)
            colours = np.asarray(im.getpalette() or [0, 0, 0], np.uint8).reshape(-1, 3)
    except Exception as exc:  # noqa: BLE001 - truncated palette PNGs fail while decoding
        raise ColonsegError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    return index, colours


def _decode_pixels(path: Path) -> tuple[np.ndarray, bool]:
    """The pixels, and whether OpenCV decoded them (tifffile decodes the TIFFs it cannot)."""
    data = np.fromfile(path, dtype=np.uint8)
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. a header claiming a size beyond OpenCV's limits
        arr = None
    by_opencv = arr is not None
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
    return arr, by_opencv


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB, upright by its EXIF orientation (grayscale is
    repeated, alpha dropped, deeper pixels scaled by their bit depth); images over
    ``max_pixels`` are refused before decoding, as are channel counts other than 1, 3 or 4."""
    arr = _decode(Path(path), max_pixels)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a binary mask as ``(H, W) uint8`` in {0, 1}.

    The encoding rules (0/1, 0/255, JPEG noise, palette, label maps, alpha-only labels, RGB
    class colours) are those of :func:`~colonseg.data.mask_encodings.binarize_mask`.

    Raises:
        ColonsegError: unreadable file, or an ambiguous encoding (an 'ignore' value beside the
            labels, several colours of no known scheme, labels too dark for the threshold).
    """
    path = Path(path)
    pixels = _decode_stored(path, palette_indices=True)
    arr = pixels.array
    if arr.dtype.kind == "f":
        arr = to_uint8(arr, source=path)
    return binarize_mask(
        arr, lossy=pixels.lossy, bits=pixels.bits, palette=pixels.palette, source=str(path)
    )


def read_instances(path: str | os.PathLike) -> np.ndarray:
    """Read an instance-labelled annotation (GlaS: 0 background, 1..k one per gland) as
    ``(H, W) int32``; a binary mask (0 and full scale, e.g. 0/255, or any JPEG) gets its
    connected regions as instances. 16-bit label maps keep their labels."""
    path = Path(path)
    pixels = _decode_stored(path)
    arr = pixels.array
    if arr.dtype.kind == "f" or (arr.dtype.kind == "i" and arr.size and arr.min() < 0):
        arr = to_uint8(arr, source=path)  # floats scaled, negative labels refused
    if arr.ndim == 3:
        if np.ptp(arr[..., :3].astype(np.int64), axis=-1).any():
            raise ColonsegError(f"{path}: colour annotation; expected instance labels (grey)")
        arr = arr[..., 0]
    if pixels.lossy or set(np.unique(arr).tolist()) <= {0, (1 << pixels.bits) - 1}:
        binary = binarize_mask(arr, lossy=pixels.lossy, bits=pixels.bits, source=str(path))
        return cv2.connectedComponents(binary, connectivity=8)[1].astype(np.int32)
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
    taken: set[str] = set()  # a set: 100k frames in one call stay linear
    for stem in stems:
        name, k = stem, 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}"
        out.append(name)
        taken.add(name)
    return out


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file over ``path`` with the permissions a plain ``open``
    would give it (``mkstemp`` makes files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def temp_beside(path: Path) -> Path:
    """An empty hidden temporary file beside ``path``, ``.<stem>.<8 random characters><suffix>``
    (the shape :func:`remove_stale_temp` finds after a kill)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        write(Path(tmp))
        publish(tmp, path)
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


def remove_stale_temp(folder: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Delete the temporary files that interrupted :func:`write_atomic` calls left in ``folder``
    (not its subfolders): hidden files named like them, ``.<stem>.<8 random characters><suffix>``;
    with ``names``, only those of these final file names. Return the paths removed.

    Call it on a folder a run writes into, as the run starts: a temporary file that another run
    writing there at that moment is still filling would be lost, and that write would fail.
    """
    wanted = None if names is None else {(Path(n).stem, Path(n).suffix) for n in names}
    removed = []
    for p in sorted(Path(folder).glob(".*")) if Path(folder).is_dir() else []:
        match = _TEMP_NAME.fullmatch(p.name)
        if match is None or p.is_symlink() or not p.is_file():
            continue
        if wanted is None or (match["stem"], match["suffix"] or "") in wanted:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed

"""What a file declares before its pixels are decoded, and the bit-depth rule that uses it.

- channels: images have 1 (grey), 3 (RGB) or 4 (RGBA) channels; a TIFF holding several images
  (pages, a z-stack, a 5-band series stored as pages) or another channel count is refused from
  its header (tifffile), before OpenCV reads its first page as if it were the whole image.
- bit depth: 8-bit pixels are kept. Deeper integer pixels (16-bit PNG or TIFF) are scaled to 8
  bits by their real depth: the depth the file declares (PNG ``sBIT``; TIFF ``BitsPerSample``
  below 16, e.g. packed 12-bit, whose raw values tifffile returns; OpenCV returns them already
  scaled to 16 bits) when every pixel fits in it; otherwise the smallest of 8, 10, 12, 14 or
  16 bits that holds the brightest pixel (max <= 255 → 8-bit, <= 1023 → 10-bit, <= 4095 →
  12-bit, <= 16383 → 14-bit, else 16-bit). So 10- or 12-bit sensor data stored in 16 bits
  keeps its brightness. The price: without a declaration, a 16-bit image that is merely dark is
  brightened (declare ``sBIT`` to avoid that). A declaration the pixels exceed is ignored (the
  PNG specification has writers scale samples up to the container and keep the original depth
  in ``sBIT``: such files read as 16-bit).
- unknown scale: negative integers, integers wider than 16 bits and floats that are not finite
  or lie outside 0..1 / 0..255 are refused (their scale cannot be known).
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from colonseg.errors import ColonsegError

__all__ = ["Header", "channel_message", "read_header", "significant_bits", "to_uint8"]

_TIFF = (".tif", ".tiff")
_DEPTHS = (8, 10, 12, 14, 16)  # bit depths a deep image without a declared depth may have


class Header(NamedTuple):
    """What :func:`read_header` learnt about a file before decoding its pixels."""

    orientation: int = 1  # EXIF orientation, 1 = upright
    palette: bool = False  # pixels are palette indices
    bits: int | None = None  # significant bits declared by the file (PNG sBIT, TIFF tag)
    lossy: bool = False  # JPEG-compressed pixels


def read_header(path: Path, max_pixels: int) -> Header:
    """Read the header only (PIL opens lazily): refuse images over ``max_pixels`` before any
    pixel is decoded (a decompression bomb never reaches memory), and TIFFs that hold more than
    one image or an unsupported channel count. Files PIL cannot identify are left to the
    decoders."""
    from PIL import Image

    tiff = _tiff_header(path) if path.suffix.lower() in _TIFF else None
    lossy = path.suffix.lower() in (".jpg", ".jpeg") or bool(tiff and tiff.lossy)
    try:
        with Image.open(path) as im:
            (w, h), palette = im.size, im.mode in ("P", "PA")
            orientation = int(im.getexif().get(274, 1) or 1)
    except Image.DecompressionBombError:
        w, h, palette, orientation = max_pixels + 1, 1, False, 1
    except Exception:  # noqa: BLE001 - unidentified or damaged header: the decoders decide
        return tiff or Header(lossy=lossy)
    if w * h > max_pixels:
        raise ColonsegError(
            f"{path}: image too large ({w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is "
            f"{max_pixels / 1e6:.0f}; downscale it first)"
        )
    bits = tiff.bits if tiff else png_sbit(path) if path.suffix.lower() == ".png" else None
    return Header(orientation if 1 <= orientation <= 8 else 1, palette, bits, lossy)


def png_sbit(path: Path) -> int | None:
    """The significant bits of a PNG's colour channels (its ``sBIT`` chunk), or None."""
    try:
        with path.open("rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            colour_type = None
            for _ in range(64):  # sBIT comes before the pixel data, after a few small chunks
                length, kind = struct.unpack(">I4s", f.read(8))
                if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                    return None
                data = f.read(length)
                f.seek(4, os.SEEK_CUR)  # CRC
                if kind == b"IHDR" and len(data) >= 10:
                    colour_type = data[9]
                elif kind == b"sBIT" and data and colour_type is not None:
                    return max(data[: 1 if colour_type in (0, 4) else 3])
    except (OSError, struct.error):
        return None
    return None


def _tiff_header(path: Path) -> Header | None:
    """Refuse a TIFF holding several images or an unsupported channel count; return its
    declared bit depth. None when tifffile cannot parse it (the decoders then decide)."""
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(path) as tif:
                series, page = tif.series[0], tif.pages.first
                shape, axes = tuple(series.shape), series.axes
                bits, lossy = int(page.bitspersample), int(page.compression) in (6, 7, 34892)
    except Exception:  # noqa: BLE001 - tifffile raises many types for damaged files
        return None
    if any(a not in "YXS" and n > 1 for a, n in zip(axes, shape, strict=False)):
        raise ColonsegError(
            f"{path}: TIFF holds several images (shape {'x'.join(map(str, shape))}, axes "
            f"{axes}); expected one 2-D image with 1, 3 or 4 channels"
        )
    samples = dict(zip(axes, shape, strict=False)).get("S", 1)
    if samples not in (1, 3, 4):
        raise ColonsegError(channel_message(path, samples))
    # BitsPerSample 16 is only the container (infer the depth); 10 or 12 is a declaration
    return Header(bits=bits if 8 < bits < 16 else None, lossy=lossy)


def channel_message(path: Path, channels: int) -> str:
    """The one-line refusal of an image with an unsupported channel count."""
    return (
        f"{path}: image has {channels} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA) "
        "(multispectral or multi-band images are not supported)"
    )


def significant_bits(arr: np.ndarray, declared: int | None, source: object) -> int:
    """Bits that carry the integer pixels of ``arr`` (see the module docstring)."""
    if arr.dtype.itemsize == 1:
        return 8
    if arr.dtype.itemsize > 2:
        raise ColonsegError(
            f"{source}: {8 * arr.dtype.itemsize}-bit integer pixels; expected 8- or 16-bit"
        )
    top = int(arr.max()) if arr.size else 0
    if declared and 8 <= declared <= 16 and top < (1 << declared):  # the data fits: trust it
        return declared
    return next(b for b in _DEPTHS if top < (1 << b))


def to_uint8(arr: np.ndarray, bits: int | None = None, source: object = "image") -> np.ndarray:
    """Scale pixels to uint8: integers by their bit depth, floats from 0..1 or 0..255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and arr.min() < 0:
            raise ColonsegError(f"{source}: negative pixel values ({arr.dtype}, min "
                                f"{int(arr.min())}); expected unsigned pixels")  # fmt: skip
        top = (1 << significant_bits(arr, bits, source)) - 1
        return (arr.astype(np.float64) * (255.0 / top)).round().astype(np.uint8)
    arr = arr.astype(np.float64)
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise ColonsegError(f"{source}: floating-point pixels from {low:g} to {high:g}; expected "
                            "0..1 or 0..255")  # fmt: skip
    return (arr * (255.0 if high <= 1.0 else 1.0)).round().astype(np.uint8)

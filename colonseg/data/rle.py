"""Run-length encoding in the BKAI-IGH NeoPolyp Kaggle submission format.

A mask is flattened row by row; runs of foreground are written as ``start length`` pairs with
1-based starts, all space-separated (an empty mask is the empty string). The submission CSV has
the header ``Id,Expected`` and two rows per image: ``<id>_0`` for the neoplastic (red) channel and
``<id>_1`` for the non-neoplastic (green) one.

Example:
    >>> rle_encode(np.array([[0, 1, 1], [1, 0, 0]]))
    '2 3'
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable

import numpy as np

from colonseg.data.io import write_atomic
from colonseg.errors import ColonsegError

__all__ = ["rle_decode", "rle_encode", "submission_rows", "write_submission"]


def rle_encode(mask: np.ndarray) -> str:
    """Binary ``(H, W)`` mask (nonzero = foreground) → ``"start length ..."`` (1-based starts)."""
    flat = np.concatenate([[0], np.asarray(mask).reshape(-1) != 0, [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat))  # 0-based run starts and ends, alternating
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends, strict=True))


def rle_decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: ``(H, W) uint8`` in {0, 1}."""
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    numbers = [int(v) for v in text.split()]
    if len(numbers) % 2:
        raise ColonsegError(f"run-length string has an odd number of values ({len(numbers)})")
    for start, length in zip(numbers[0::2], numbers[1::2], strict=True):
        if start < 1 or length < 0 or start - 1 + length > flat.size:
            raise ColonsegError(f"run {start} {length} lies outside a {shape[0]}x{shape[1]} mask")
        flat[start - 1 : start - 1 + length] = 1
    return flat.reshape(shape)


def submission_rows(image_id: str, classes: np.ndarray, num_classes: int = 3) -> list[tuple]:
    """The rows ``(f"{image_id}_{k-1}", rle)`` of one class map, one per class ``k >= 1``."""
    return [(f"{image_id}_{k - 1}", rle_encode(classes == k)) for k in range(1, num_classes)]


def write_submission(path: str | os.PathLike, rows: Iterable[tuple[str, str]]) -> None:
    """Write ``(Id, Expected)`` rows as a Kaggle submission CSV, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Id", "Expected"])
    writer.writerows(rows)
    write_atomic(path, lambda tmp: tmp.write_text(buf.getvalue()))

"""Boxes from masks: the one box convention of colonseg.

A box is ``x0, y0, x1, y1`` in pixels of its image with ``x1, y1`` the last column and row
*inside* the region (inclusive), as Kvasir-SEG's ``kavsir_bboxes.json`` gives them. Automatic
MedSAM's box labels, its losses (``colonseg.losses.box_prior.box_region``), the MSSG refinement's
prompts and the app's drawn boxes all use it.

Example:
    >>> mask = np.zeros((8, 8), np.uint8); mask[2:4, 1:5] = 1
    >>> mask_boxes(mask).tolist()
    [[1.0, 2.0, 4.0, 3.0]]
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MIN_REGION_FRACTION", "mask_boxes"]

MIN_REGION_FRACTION = 1e-4  # mask regions smaller than this share of the image get no box


def mask_boxes(mask: np.ndarray, min_fraction: float = MIN_REGION_FRACTION) -> np.ndarray:
    """One box per 8-connected foreground region covering at least ``min_fraction`` of the
    image: ``(K, 4)`` float32, inclusive pixel coordinates."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    floor = min_fraction * mask.size
    boxes = [(x, y, x + w - 1, y + h - 1) for x, y, w, h, area in stats[1:n] if area >= floor]
    return np.array(boxes, np.float32).reshape(-1, 4)

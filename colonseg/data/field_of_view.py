"""The endoscopic field of view of a colonoscopy frame: where the mucosa is, without the black
border, the text and graphics burnt into it, or the coloured status boxes some processors add.

Used by SIMPO (lesions are placed inside it) and by the ``fov`` post-processing step (nothing
is predicted outside it).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["valid_area"]


def valid_area(image: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """The endoscopic field of view ``(H, W) uint8`` {0, 1}: not the black border, not the
    bright text and graphics overlaid in the border zone, shrunk by ``margin`` of the short side.

    The largest connected non-dark region is kept (side panels and corner boxes separated from
    it by black fall away), its holes are filled, then near-white, unsaturated overlay
    components that touch the dark border (text) and saturated blue/green rectangles (status
    boxes) are cut out.
    """
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    lit = (hsv[..., 2] > 25).astype(np.uint8)
    lit = cv2.morphologyEx(lit, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=4)
    if n <= 1:
        return np.zeros(image.shape[:2], np.uint8)
    area = (labels == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())).astype(np.uint8)
    area = ndimage.binary_fill_holes(area).astype(np.uint8)
    overlay = ((hsv[..., 1] < 40) & (hsv[..., 2] > 200)).astype(np.uint8)
    overlay = cv2.dilate(overlay, np.ones((7, 7), np.uint8))
    border = cv2.dilate(1 - area, np.ones((15, 15), np.uint8))
    _, labels = cv2.connectedComponents(overlay, connectivity=8)
    touching = np.unique(labels[(border > 0) & (overlay > 0)])
    area[np.isin(labels, touching[touching > 0])] = 0
    # coloured boxes (status bars, menus): saturated non-mucosa hues filling their bounding box
    boxes = ((hsv[..., 0] > 35) & (hsv[..., 0] < 150) & (hsv[..., 1] > 80)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(boxes, connectivity=8)
    for i in range(1, n):
        x, y, w, h, count = stats[i]
        if count > 0.001 * boxes.size and count > 0.75 * w * h:
            area[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4] = 0
    k = max(1, round(margin * min(image.shape[:2])))
    return cv2.erode(area, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))

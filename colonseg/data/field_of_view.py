"""The endoscopic field of view of a colonoscopy frame: where the mucosa is, without the black
border, the text and graphics burnt into it, or the coloured status boxes some processors add.

Used by SIMPO (lesions are placed inside it) and by the ``fov`` post-processing step (text over
the mucosa is painted over before the model sees the frame, and nothing is predicted outside the
view).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["erase_text", "text_lines", "valid_area"]

WORK_SIDE = 2048  # text is searched for at most at this size (long side, pixels): 4K video


def valid_area(image: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """The endoscopic field of view ``(H, W) uint8`` {0, 1}: not the black border, not the
    bright text and graphics overlaid in the border zone, shrunk by ``margin`` of the short side.

    The largest connected non-dark region is kept (side panels and corner boxes separated from
    it by black fall away), its holes are filled, then near-white, unsaturated overlay
    components that touch the dark border (text), lines of text burnt into the mucosa itself
    (:func:`text_lines`) and saturated blue/green rectangles (status boxes) are cut out.
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
    area[text_lines(image) > 0] = 0
    # coloured boxes (status bars, menus): saturated non-mucosa hues filling their bounding box
    boxes = _box_colour(hsv).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(boxes, connectivity=8)
    for i in range(1, n):
        x, y, w, h, count = stats[i]
        if count > 0.001 * boxes.size and count > 0.75 * w * h:
            area[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4] = 0
    k = max(1, round(margin * min(image.shape[:2])))
    return cv2.erode(area, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))


def text_lines(image: np.ndarray) -> np.ndarray:
    """Lines of bright text and marks burnt into a frame ``(H, W) uint8`` {0, 1}: date, time
    and patient fields over the mucosa, the row of white squares above Kvasir-SEG's corner box.

    Small bright components (white top-hat of the luminance) of character size are grouped
    into rows; three or more of similar height standing on one baseline, in a row at least
    three times as wide as tall, make a line, and shorter rows of two or more next to such
    lines join them; their boxes, padded, are returned. Specular glints vary in size and
    rarely line up. Frames larger than ``WORK_SIDE`` are searched at that size.
    """
    h, w = image.shape[:2]
    scale = WORK_SIDE / max(h, w)
    if scale < 1:
        small = cv2.resize(
            image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
        )
        return cv2.resize(text_lines(small), (w, h), interpolation=cv2.INTER_NEAREST)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    k = max(7, round(0.03 * max(h, w)) | 1)
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    hat = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, ellipse)
    bright = ((hat > 30) & (gray > 100)).astype(np.uint8)
    stats = cv2.connectedComponentsWithStats(bright, connectivity=8)[2]
    x, y, cw, ch = (stats[1:, j] for j in range(4))
    keep = (ch >= max(4, 0.01 * h)) & (ch <= 0.05 * h) & (cw <= 1.5 * ch)
    x, y, cw, ch = x[keep], y[keep], cw[keep], ch[keep]
    chars = np.zeros((h, w), np.uint8)
    if not len(ch):
        return chars
    for i in range(len(x)):
        chars[y[i] : y[i] + ch[i], x[i] : x[i] + cw[i]] = 1
    line = int(np.median(ch))  # character height: spacing and line gaps scale with it
    rows = cv2.dilate(chars, np.ones((1, round(1.5 * line) | 1), np.uint8))
    lines = cv2.connectedComponentsWithStats(rows, connectivity=8)[2]
    cx, cy = x + cw / 2, y + ch / 2
    pad = max(2, k // 4)
    strong, weak = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    for lx, ly, lw, lh, _ in lines[1:]:
        members = (cx >= lx) & (cx < lx + lw) & (cy >= ly) & (cy < ly + lh)
        heights, bottoms = ch[members], (y + ch)[members]
        if len(heights) < 2 or heights.max() > 2 * np.median(heights):
            continue
        # characters stand on one baseline; glints scatter up and down
        on_line = np.abs(bottoms - np.median(bottoms)) <= max(1.0, 0.15 * np.median(heights))
        if on_line.mean() < 0.75:
            continue
        box = (slice(max(0, ly - pad), ly + lh + pad), slice(max(0, lx - pad), lx + lw + pad))
        if on_line.sum() >= 3 and lw >= 3 * lh:
            strong[box] = 1
        else:  # a short line ("Q:N"): text only when it sits in a block of longer lines
            weak[box] = 1
    if strong.any() and weak.any():
        near = cv2.dilate(strong, np.ones((4 * line + 1, 2 * line + 1), np.uint8))
        labels = cv2.connectedComponents(weak)[1]
        hits = np.unique(labels[(near > 0) & (weak > 0)])
        strong[np.isin(labels, hits[hits > 0])] = 1
    return strong


def erase_text(image: np.ndarray) -> np.ndarray:
    """``image`` with the lines found by :func:`text_lines` that lie over the mucosa painted
    over from their surroundings (Telea inpainting), so that a model never reacts to them;
    ``image`` itself when there are none. Text on the black border or inside a status box is
    left alone: models train on frames that have it there."""
    text = text_lines(image)
    if not text.any():
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    off_mucosa = (hsv[..., 2] < 40) | _box_colour(hsv)
    n, labels = cv2.connectedComponents(text)
    for i in range(1, n):
        line = labels == i
        if off_mucosa[line].mean() > 0.3:
            text[line] = 0
    if not text.any():
        return image
    return cv2.inpaint(image, text, max(3, round(0.01 * max(image.shape[:2]))), cv2.INPAINT_TELEA)


def _box_colour(hsv: np.ndarray) -> np.ndarray:
    """Saturated blue/green, the colours of status boxes and menus, never of mucosa."""
    return (hsv[..., 0] > 35) & (hsv[..., 0] < 150) & (hsv[..., 1] > 80)

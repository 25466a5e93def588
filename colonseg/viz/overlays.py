"""Pictures for people: mask overlays, heat maps and prediction-vs-truth comparisons."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "compare",
    "contours",
    "heatmap",
    "overlay",
    "overlay_classes",
    "overlay_prediction",
    "thumbnail",
]

GREEN, RED, YELLOW = (0, 220, 0), (255, 40, 40), (255, 220, 0)


def contours(image: np.ndarray, mask: np.ndarray, color=YELLOW, thickness: int | None = None):
    """Draw the outline of ``mask`` on a copy of ``image``."""
    out = image.copy()
    t = thickness or max(1, round(max(image.shape[:2]) / 250))
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, found, -1, color, t)
    return out


def overlay(image: np.ndarray, mask: np.ndarray, color=YELLOW, alpha: float = 0.35) -> np.ndarray:
    """Tint the mask area and outline it (on a copy; only the pixels inside the mask's bounding
    box are computed, so a video frame with a small polyp costs little)."""
    out = image.copy()
    mask = mask.astype(np.uint8, copy=False)
    x, y, w, h = cv2.boundingRect(mask)
    if w and h:
        box = out[y : y + h, x : x + w]
        values = np.arange(256, dtype=np.float32)[:, None]  # the blend of every value, as a LUT
        lut = ((1 - alpha) * values + alpha * np.asarray(color, np.float32)).clip(0, 255)
        tinted = cv2.LUT(box, lut.astype(np.uint8).reshape(256, 1, 3))
        np.copyto(box, tinted, where=mask[y : y + h, x : x + w, None].astype(bool))
    t = max(1, round(max(image.shape[:2]) / 250))
    found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return cv2.drawContours(out, found, -1, color, t)


def overlay_classes(
    image: np.ndarray, classes: np.ndarray, colours, alpha: float = 0.35
) -> np.ndarray:
    """Tint and outline every foreground class of a class map in its own colour."""
    out = image
    for c in range(1, len(colours)):
        if (classes == c).any():
            out = overlay(out, classes == c, colours[c], alpha)
    return out


def overlay_prediction(image: np.ndarray, classes: np.ndarray, scheme) -> np.ndarray:
    """A prediction's overlay: each class in its scheme colour, or the binary mask in yellow."""
    if scheme.multiclass:
        return overlay_classes(image, classes, scheme.colours)
    return overlay(image, classes > 0)


def heatmap(
    image: np.ndarray, prob: np.ndarray, alpha: float = 0.45, top: float = 1.0
) -> np.ndarray:
    """Blend a JET-coloured probability map over the image; ``top`` is shown as full red."""
    scaled = np.clip(prob / top, 0, 1)
    colored = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1 - alpha, colored, alpha, 0)


def compare(image: np.ndarray, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Ground truth outlined in green, prediction tinted and outlined in red."""
    return contours(overlay(image, pred, RED, 0.3), target, GREEN)


def thumbnail(image: np.ndarray, max_side: int = 320) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)

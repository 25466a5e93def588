"""Deterministic tiny images and masks (bright discs on textured background) for tests and demos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from colonseg.data.io import write_png

__all__ = ["create_disc_image", "write_folder_dataset"]


def create_disc_image(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An RGB ``(size, size, 3) uint8`` image with one or two discs and their ``{0, 1}`` mask."""
    rng = np.random.default_rng(seed)
    image = rng.normal(90, 12, (size, size, 3)).clip(0, 255)
    image[..., 0] += 40  # reddish mucosa
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        r = int(rng.integers(size // 10, size // 4))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        cv2.circle(mask, (cx, cy), r, 1, -1)
    image[mask.astype(bool)] += 70
    return image.clip(0, 255).astype(np.uint8), mask


def write_folder_dataset(root: str | Path, n: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write ``n`` pairs as ``root/images/case_i.png`` + ``root/masks/case_i.png`` (0/255)."""
    root = Path(root)
    for i in range(n):
        image, mask = create_disc_image(size, seed + i)
        write_png(root / "images" / f"case_{i}.png", image)
        write_png(root / "masks" / f"case_{i}.png", mask * 255)
    return root

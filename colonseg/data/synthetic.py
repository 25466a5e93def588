"""Deterministic tiny images and masks for tests and demos: bright discs on textured mucosa, and
H&E-like glands (dark nuclear border around a pale lumen) on pink stroma."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from colonseg.data.io import write_png

__all__ = [
    "create_gland_image",
    "create_disc_image",
    "write_folder_dataset",
    "write_glas_dataset",
    "write_neopolyp_dataset",
    "write_normal_frames",
]


def create_disc_image(
    size: int = 64, seed: int = 0, classes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB ``(size, size, 3) uint8`` image with one or two discs and their class map.

    Each disc takes a class in ``1..classes`` and is brightened in a class-specific way (class 1
    in every channel, class 2 mostly in green), so a model can learn both outline and class.
    """
    rng = np.random.default_rng(seed)
    image = rng.normal(90, 12, (size, size, 3)).clip(0, 255)
    image[..., 0] += 40  # reddish mucosa
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        r = int(rng.integers(size // 10, size // 4))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        label = int(rng.integers(1, classes + 1)) if classes > 1 else 1
        cv2.circle(mask, (cx, cy), r, label, -1)
    tint = np.array([[0, 0, 0], [70, 70, 70], [10, 90, 30]], np.float64)
    image += tint[np.minimum(mask, 2)]
    return image.clip(0, 255).astype(np.uint8), mask


def write_folder_dataset(root: str | Path, n: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write ``n`` pairs as ``root/images/case_i.png`` + ``root/masks/case_i.png`` (0/255)."""
    root = Path(root)
    for i in range(n):
        image, mask = create_disc_image(size, seed + i)
        write_png(root / "images" / f"case_{i}.png", image)
        write_png(root / "masks" / f"case_{i}.png", mask * 255)
    return root


def write_neopolyp_dataset(root: str | Path, n: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write ``n`` pairs in the BKAI-IGH NeoPolyp Kaggle layout: ``train/train/*.jpeg`` images and
    ``train_gt/train_gt/*.jpeg`` RGB masks (red neoplastic, green non-neoplastic), both JPEG so
    the masks carry the same colour noise as the real ones."""
    root = Path(root)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    for i in range(n):
        image, classes = create_disc_image(size, seed + i, classes=2)
        for folder, rgb in (("train", image), ("train_gt", colours[classes])):
            path = root / folder / folder / f"case_{i}.jpeg"
            path.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            path.write_bytes(buf.tobytes())
    return root


STROMA, BORDER, LUMEN = (225, 150, 195), (85, 40, 120), (240, 225, 240)  # H&E-like RGB


def create_gland_image(
    size: tuple[int, int] = (96, 128), seed: int = 0, glands: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like RGB image ``(H, W, 3) uint8`` with ``glands`` elliptical glands — a dark
    nuclear border around a pale lumen, on noisy pink stroma — and its instance labels (1..k)."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.empty((h, w, 3), np.float64)
    image[:] = STROMA
    labels = np.zeros((h, w), np.uint8)
    side = min(h, w)
    for k in range(1, glands + 1):
        axes = (int(rng.integers(side // 8, side // 5)), int(rng.integers(side // 8, side // 5)))
        centre = (int(rng.integers(axes[0], w - axes[0])), int(rng.integers(axes[1], h - axes[1])))
        angle = float(rng.uniform(0, 180))
        gland = np.zeros((h, w), np.uint8)
        cv2.ellipse(gland, centre, axes, angle, 0, 360, 1, -1)
        inner = np.zeros((h, w), np.uint8)
        ring = max(2, side // 24)
        cv2.ellipse(inner, centre, (axes[0] - ring, axes[1] - ring), angle, 0, 360, 1, -1)
        image[gland > 0] = BORDER
        image[inner > 0] = LUMEN
        labels[gland > 0] = k
    image += rng.normal(0, 10, image.shape)
    return image.clip(0, 255).astype(np.uint8), labels


def write_glas_dataset(
    root: str | Path, parts: dict[str, int] | None = None, size: tuple[int, int] = (96, 128)
) -> Path:
    """Write a GlaS-layout folder: ``<part>_<i>.png`` images + ``<part>_<i>_anno.png`` instance
    labels, ``parts`` images per part (default: train 4, testA 2, testB 1)."""
    root = Path(root)
    seed = 0
    for part, n in (parts or {"train": 4, "testA": 2, "testB": 1}).items():
        for i in range(1, n + 1):
            image, labels = create_gland_image(size, seed)
            seed += 1
            write_png(root / f"{part}_{i}.png", image)
            write_png(root / f"{part}_{i}_anno.png", labels)
    return root


def write_normal_frames(root: str | Path, n: int = 12, size: int = 72, seed: int = 0) -> Path:
    """Write ``n`` "normal" endoscopy-like frames (a reddish textured disc on black, no lesion)
    as ``root/normal/n<i>.png`` and one texture as ``root/textures/t/a.png`` (MAPSeg's inputs)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n):
        frame = np.zeros((size, size, 3), np.uint8)
        cv2.circle(frame, (size // 2, size // 2), size // 2 - 3, (180, 90, 70), -1)
        frame = np.clip(frame + rng.normal(0, 8, frame.shape) * (frame > 0), 0, 255)
        write_png(root / "normal" / f"n{i}.png", frame.astype(np.uint8))
    write_png(root / "textures" / "t" / "a.png", rng.integers(0, 255, (20, 20, 3), np.uint8))
    return root

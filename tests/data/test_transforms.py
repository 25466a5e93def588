"""Augmentation presets: each builds and keeps image and mask aligned; ``endoscope`` changes
colours, more at ``endoscope_strong``."""

from __future__ import annotations

import numpy as np
import pytest

from colonseg.data.transforms import AUGMENTATIONS, augment, create_augmentation

MUCOSA = (180, 90, 80)  # one flat colour: geometric ops alone leave it as it is


def _scene(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A flat mucosa-coloured image and an off-centre L-shaped mask (no flip or quarter turn maps
    it onto itself, so a geometric op applied to one of the two shows)."""
    mask = np.zeros((size, size), np.uint8)
    mask[12:60, 20:36] = 1
    mask[44:60, 36:70] = 1
    return np.full((size, size, 3), MUCOSA, np.uint8), mask


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_preset_builds_and_keeps_shapes(name):
    image, mask = _scene(64)
    out = augment(create_augmentation(name), 0, image=image, mask=mask)
    assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
    assert out["mask"].shape == mask.shape and set(np.unique(out["mask"])) <= {0, 1}


@pytest.mark.parametrize("name", ["endoscope", "endoscope_strong"])
def test_endoscope_keeps_image_and_mask_aligned(name):
    _, mask = _scene()
    image = np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)  # the mask, as a picture
    aug = create_augmentation(name)
    for seed in range(30):
        out = augment(aug, seed, image=image, mask=mask)
        grey, moved = out["image"].astype(float).mean(-1), out["mask"].astype(bool)
        assert moved.sum() > 0.5 * mask.sum()
        cut = (grey[moved].mean() + grey[~moved].mean()) / 2  # between the two after colour shifts
        shape = grey > cut
        iou = (shape & moved).sum() / (shape | moved).sum()
        assert iou > 0.8, (seed, iou)


def _colour_shift(name: str, seeds: int = 40) -> np.ndarray:
    """Per seed, the largest change of a channel's median over the frame (border fill aside)."""
    image, mask = _scene()
    aug = create_augmentation(name)
    shifts = []
    for seed in range(seeds):
        pixels = augment(aug, seed, image=image, mask=mask)["image"].reshape(-1, 3).astype(float)
        pixels = pixels[pixels.sum(1) > 0]  # the black border an affine move leaves
        shifts.append(np.abs(np.median(pixels, 0) - MUCOSA).max())
    return np.array(shifts)


def test_endoscope_changes_colours_and_strength_scales_them():
    normal, strong = _colour_shift("endoscope"), _colour_shift("endoscope_strong")
    assert (normal > 3).mean() > 0.5  # most frames come out in another colour
    assert np.median(strong[strong > 3]) > 1.3 * np.median(normal[normal > 3])
    assert (_colour_shift("flips") == 0).all()  # what the check sees without photometric ops

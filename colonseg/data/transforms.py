"""Albumentations pipelines, chosen by name in the config (``data.augment``).

``none``   no augmentation.
``flips``  horizontal/vertical flips and 90° rotations.
``polyp``  the reference polyp projects' recipe: flips, rotations, shift/scale/rotate, gamma,
           brightness/contrast, hue, blur and coarse dropout.
``mapseg`` applied after SIMPO: flips, zoom-in and rotation, strong colour, blur and JPEG
           changes, so that the seam of a pasted lesion is no clue and other endoscopes' colour
           and sharpness are seen.
"""

from __future__ import annotations

import albumentations as A
import torch

from colonseg.registry import Registry

__all__ = ["AUGMENTATIONS", "augment", "create_augmentation"]

AUGMENTATIONS = Registry("augmentation")


@AUGMENTATIONS.register("none")
def _none() -> A.Compose:
    return A.Compose([])


@AUGMENTATIONS.register("flips")
def _flips() -> A.Compose:
    return A.Compose([A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90()])


@AUGMENTATIONS.register("polyp")
def _polyp() -> A.Compose:
    return A.Compose(
        [
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
            A.Affine(
                scale=(0.8, 1.25),
                translate_percent=(-0.1, 0.1),
                rotate=(-20, 20),
                border_mode=0,
                p=0.5,
            ),
            A.RandomGamma(gamma_limit=(80, 120), p=0.3),
            A.RandomBrightnessContrast(0.15, 0.15, p=0.3),
            A.HueSaturationValue(5, 10, 10, p=0.2),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=5)], p=0.15),
            A.CoarseDropout(
                num_holes_range=(1, 4),
                hole_height_range=(0.04, 0.1),
                hole_width_range=(0.04, 0.1),
                p=0.15,
            ),
        ]
    )


@AUGMENTATIONS.register("mapseg")
def _mapseg() -> A.Compose:
    return A.Compose(
        [
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.Affine(scale=(1.0, 1.5), rotate=(-30, 30), border_mode=0, p=0.5),
            A.RandomGamma(gamma_limit=(70, 140), p=0.5),
            A.RandomBrightnessContrast(0.25, 0.25, p=0.5),
            A.HueSaturationValue(8, 25, 15, p=0.5),
            A.OneOf([A.GaussianBlur(sigma_limit=(0.3, 1.5)), A.MotionBlur(blur_limit=5)], p=0.3),
            A.ImageCompression(quality_range=(40, 95), p=0.5),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
        ]
    )


def create_augmentation(name: str) -> A.Compose:
    return AUGMENTATIONS.create(name)


def augment(transform: A.Compose, seed: int | None = None, **data) -> dict:
    """Apply ``transform`` with its RNG seeded by ``seed``, by default drawn from torch's RNG.

    albumentations' Compose keeps a private RNG that global seeds never reach: forked data-loader
    workers would repeat each other's augmentations and no run could be replayed. Supervised
    training passes the per-sample seed :class:`EpochShuffle` draws; without one, torch's RNG
    (seeded per worker by the DataLoader) keeps workers apart and runs reproducible.
    """
    if seed is None:
        seed = int(torch.randint(2**31, ()).item())
    transform.set_random_seed(seed)
    return transform(**data)

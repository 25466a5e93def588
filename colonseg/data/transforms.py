"""Albumentations pipelines, chosen by name in the config (``data.augment``).

``none``   no augmentation.
``flips``  horizontal/vertical flips and 90° rotations.
``polyp``  the reference polyp projects' recipe: flips, rotations, shift/scale/rotate, gamma,
           brightness/contrast, hue, blur and coarse dropout.
``neopolyp`` the NeoPolyp reference recipe's list and nothing more: flips, 90° and free
           rotations, shifts, random gamma, Gaussian blur and coarse dropout (no colour, scale
           or motion-blur changes, which ``polyp`` adds).
``mapseg`` applied after SIMPO: flips, zoom-in and rotation, strong colour, blur and JPEG
           changes, so that the seam of a pasted lesion is no clue and other endoscopes' colour
           and sharpness are seen.
``endoscope`` what differs between endoscopes and centres, for models that must work in a
           hospital they have not seen: flips, slight scale/rotation, then light (brightness,
           contrast, gamma, uneven illumination), colour (hue, saturation, white balance as
           per-channel shifts), sharpness (motion, Gaussian or defocus blur) and video
           compression (JPEG).
``endoscope_strong`` the same with every photometric range doubled (the strength axis of the
           generalisation benchmark, ``benchmarks/generalisation.py``).
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


@AUGMENTATIONS.register("neopolyp")
def _neopolyp() -> A.Compose:
    # the reference names the transforms, not their ranges: these ranges and probabilities are ours
    return A.Compose(
        [
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
            A.Affine(translate_percent=(-0.1, 0.1), rotate=(-30, 30), border_mode=0, p=0.5),
            A.RandomGamma(gamma_limit=(70, 130), p=0.3),
            A.GaussianBlur(blur_limit=(3, 7), p=0.2),
            A.CoarseDropout(
                num_holes_range=(1, 6),
                hole_height_range=(0.04, 0.12),
                hole_width_range=(0.04, 0.12),
                p=0.2,
            ),  # holes in the image only: the mask keeps its labels (fill_mask=None)
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


def _endoscope(strength: float) -> A.Compose:
    """Flips, slight scale/rotation, and the photometric changes of another endoscope with their
    ranges scaled by ``strength`` (1: ``endoscope``; the probabilities stay fixed)."""
    s = strength
    return A.Compose(
        [
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
            A.Affine(scale=(0.9, 1.15), rotate=(-15, 15), border_mode=0, p=0.5),
            # light: exposure, tone curve, and the light falling off across the frame
            A.RandomBrightnessContrast(0.15 * s, 0.15 * s, p=0.6),
            A.RandomGamma(gamma_limit=(100 - 20 * s, 100 + 20 * s), p=0.5),
            A.Illumination(mode="gaussian", intensity_range=(0.02, 0.1 * s), p=0.3),
            # colour: sensor and light source (hue, saturation), white balance (channel shifts)
            A.HueSaturationValue(5 * s, 15 * s, 10 * s, p=0.5),
            A.RGBShift(10 * s, 10 * s, 10 * s, p=0.4),
            # sharpness: camera motion, optics, out-of-focus frames
            A.OneOf(
                [
                    A.MotionBlur(blur_limit=(3, 3 + 2 * round(s))),
                    A.GaussianBlur(sigma_limit=(0.3, 1.0 * s)),
                    A.Defocus(radius=(1, 1 + 2 * round(s)), alias_blur=(0.1, 0.3)),
                ],
                p=0.3,
            ),
            # the video codec and the export of the frames
            A.ImageCompression(quality_range=(max(20, round(95 - 45 * s)), 95), p=0.5),
        ]
    )


@AUGMENTATIONS.register("endoscope")
def _endoscope_default() -> A.Compose:
    return _endoscope(1.0)


@AUGMENTATIONS.register("endoscope_strong")
def _endoscope_strong() -> A.Compose:
    return _endoscope(2.0)


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

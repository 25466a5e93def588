"""Label schemes: what a mask's pixel values mean, and how class maps look as RGB.

``binary``    polyp (or gland) vs background; the model has one output channel (sigmoid).
``neopolyp``  BKAI-IGH NeoPolyp: background, neoplastic (red), non-neoplastic (green); the model
              has three output channels (softmax). RGB masks are decoded by the nearest class
              colour, which absorbs JPEG colour noise; single-channel masks holding the class
              indices 0..2 (lossless PNG) are read as they are.

Class maps are ``(H, W) uint8`` class indices (0 = background).

Example:
    >>> scheme = get_scheme("neopolyp")
    >>> classes = read_label("train_gt/abc.jpeg", scheme)   # (H, W) in {0, 1, 2}
    >>> rgb = scheme.colorize(classes)                       # the Kaggle colour code
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colonseg.data.io import _decode, read_mask
from colonseg.errors import ColonsegError

__all__ = [
    "SCHEMES",
    "LabelScheme",
    "decide",
    "get_scheme",
    "nearest_colour",
    "read_label",
    "scheme_for_masks",
]


@dataclass(frozen=True)
class LabelScheme:
    """Class names (background first), their short metric keys and their RGB colours."""

    name: str
    class_names: tuple[str, ...]
    keys: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        """Classes including background."""
        return len(self.class_names)

    @property
    def model_channels(self) -> int:
        """Output channels a model needs: 1 (sigmoid) for two classes, else one per class."""
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def multiclass(self) -> bool:
        return self.num_classes > 2

    def colorize(self, classes: np.ndarray) -> np.ndarray:
        """Class map ``(H, W)`` → RGB ``(H, W, 3) uint8`` in this scheme's colours."""
        return np.asarray(self.colours, np.uint8)[classes]

    def mask_image(self, classes: np.ndarray) -> np.ndarray:
        """The mask as users save it: RGB class colours, or 0/255 grey for binary schemes."""
        return self.colorize(classes) if self.multiclass else (classes > 0).astype(np.uint8) * 255


SCHEMES = {
    "binary": LabelScheme(
        "binary", ("background", "polyp"), ("bg", "fg"), ((0, 0, 0), (255, 255, 255))
    ),
    "neopolyp": LabelScheme(
        "neopolyp",
        ("background", "neoplastic", "non-neoplastic"),
        ("bg", "neo", "non"),
        ((0, 0, 0), (255, 0, 0), (0, 255, 0)),
    ),
}


def get_scheme(name: str) -> LabelScheme:
    if name not in SCHEMES:
        raise ColonsegError(f"Unknown label scheme '{name}'. Available: {', '.join(SCHEMES)}.")
    return SCHEMES[name]


def nearest_colour(rgb: np.ndarray, colours: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """Index of the nearest colour (Euclidean in RGB) for every pixel of ``(H, W, 3)``."""
    pixels = rgb[..., :3].astype(np.int32)
    palette = np.asarray(colours, np.int32)
    dist = ((pixels[..., None, :] - palette) ** 2).sum(-1)
    return dist.argmin(-1).astype(np.uint8)


def read_label(path: str | os.PathLike, scheme: LabelScheme) -> np.ndarray:
    """Read an annotation as a class map ``(H, W) uint8`` under ``scheme``."""
    if not scheme.multiclass:
        return read_mask(path)
    path = Path(path)
    arr = _decode(path)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return nearest_colour(arr, scheme.colours)
    flat = arr if arr.ndim == 2 else arr[..., 0]
    if int(flat.max()) < scheme.num_classes:
        return flat.astype(np.uint8)
    colours = ", ".join(f"{n}={c}" for n, c in zip(scheme.class_names, scheme.colours, strict=True))
    raise ColonsegError(
        f"{path}: single-channel mask with values up to {int(flat.max())}; a {scheme.name} mask "
        f"is RGB ({colours}) or holds class indices 0..{scheme.num_classes - 1}"
    )


def scheme_for_masks(
    model_scheme: LabelScheme, mask_paths: list[str | os.PathLike], look: int = 8
) -> LabelScheme:
    """The scheme to read a dataset's masks with, for a model of ``model_scheme``.

    A multi-class model on a binary dataset (grey or white masks, e.g. Kvasir-SEG, CVC-ClinicDB)
    is scored as binary: its classes merged into polyp. The first non-empty mask among the first
    ``look`` decides: saturated colours, or single-channel class indices, keep the model's scheme.
    """
    if not model_scheme.multiclass:
        return model_scheme
    for path in mask_paths[:look]:
        arr = _decode(Path(path))
        if not arr.any():
            continue
        if arr.ndim == 3 and arr.shape[2] >= 3:
            rgb = arr[..., :3].astype(np.int16)
            coloured = ((rgb.max(-1) - rgb.min(-1)) > 100).any()
            return model_scheme if coloured else SCHEMES["binary"]
        return model_scheme if int(arr.max()) < model_scheme.num_classes else SCHEMES["binary"]
    return model_scheme


def decide(probs, threshold: float):
    """Class probabilities ``(..., C, H, W)`` → polyp probability and class map ``(..., H, W)``.

    One rule for every consumer (training metrics on torch tensors, the Predictor on numpy
    arrays): a pixel is polyp when ``1 - p(background) >= threshold`` (so the threshold means the
    same as for binary models), and a polyp pixel takes its most probable non-background class.
    ``C = 1`` holds a sigmoid probability; the class map is then the mask. The class map is uint8.
    """
    if probs.shape[-3] == 1:
        fg = probs[..., 0, :, :]
        best = 1
    else:
        fg = 1.0 - probs[..., 0, :, :]
        best = probs[..., 1:, :, :].argmax(-3) + 1
    if isinstance(probs, np.ndarray):  # numpy: ~10x faster than torch on one CPU image
        return fg, np.where(fg >= threshold, best, 0).astype(np.uint8)
    return fg, torch.where(fg >= threshold, best, 0).to(torch.uint8)

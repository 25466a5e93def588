"""``region_refiner``: a small learned stage that refines a multi-class model's class maps.

Input, at the probability map's resolution: the image (normalised with the refiner's own
``mean``/``std``), the model's class probabilities ``(C, H, W)`` and their *region-pooled*
copy — for every connected region of the predicted polyp mask (``1 - p(background) >= 0.5``,
8-connected) the mean class probabilities over the region, broadcast over it, zeros outside
(:func:`region_pool`). That region-wise class evidence is what the ``class_vote`` rule uses; here
a network learns how to weigh it against the pixel's own evidence and the image.

Body: a 3×3 stride-2 stem, four residual 3×3 convolutions dilated 1, 2, 4, 8 at half
resolution (BN + ReLU; a receptive field of about 125 px), and a 1×1 head whose
zero-initialised output, upsampled bilinearly, is *added* to the full-resolution
``log(probs)``: an untrained refiner returns the model's probabilities unchanged, and training
learns only the correction. About 23 k parameters at ``width=24``; half resolution makes it 4×
cheaper than at full (at 352² on one CPU thread 0.11 s, two thirds of a U-Net-Lite0 pass, not
twice one), while the base model's own boundaries stay at full resolution in ``log(probs)``.

It is applied as the post-processing step ``refine=NAME_OR_PATH`` (:mod:`colonseg.postprocess`)
and trained with ``colonseg train refiner_neopolyp`` (the ``refine`` method) on out-of-fold
probabilities of base models.

Example:
    >>> refiner = create_model("region_refiner", classes=3)
    >>> probs = refiner.refine(model_probs, image)   # (3, S, S) numpy → refined (3, S, S)
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colonseg.data.datamodule import prepare_images
from colonseg.errors import ColonsegError
from colonseg.models.registry import MODELS

__all__ = ["RegionRefiner", "region_pool"]

_EPS = 1e-6
DILATIONS = (1, 2, 4, 8)


def region_pool(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Region-wise mean class probabilities of the predicted polyp regions.

    Args:
        probs: class probabilities, background first.
        threshold: a pixel is polyp when ``1 - p(background) >= threshold``.

    Returns:
        ``(C, H, W)`` float32: in each 8-connected polyp region the mean of ``probs`` over it,
        zeros outside every region.

    Shape:
        probs: ``(C, H, W)``, ``C >= 2``.
    """
    fg = (1.0 - probs[0]) >= threshold
    n, labels = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(probs.shape, np.float32)
    flat = labels.reshape(-1)
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=p.reshape(-1), minlength=n) for p in probs])
    means = (sums / np.maximum(counts, 1.0)).astype(np.float32)  # (C, regions)
    means[:, 0] = 0.0  # label 0 is everything outside the regions
    return means[:, labels]


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, dilation: int = 1, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class RegionRefiner(nn.Module):
    """Refines class probabilities with the image and region-pooled class evidence (see the
    module docstring).

    Args:
        classes: classes of the refined model, background included (at least 2).
        width: channels of the hidden layers.
        mean: the image normalisation's per-channel mean (RGB in [0, 1]).
        std: its per-channel standard deviation.

    Shape:
        ``forward(image (B, 3, H, W), probs (B, C, H, W), pooled (B, C, H, W))`` → logits
        ``(B, C, H, W)``; ``softmax`` of them are the refined probabilities.

    Example:
        >>> refiner = RegionRefiner(classes=3)
        >>> logits = refiner(image, probs, pooled)          # == probs.log() while untrained
    """

    def __init__(
        self,
        classes: int = 3,
        width: int = 24,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        super().__init__()
        if classes < 2:
            raise ColonsegError(
                f"a region refiner needs class probabilities (classes >= 2, got {classes})"
            )
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ColonsegError(f"a region refiner normalises RGB: mean {mean}, std {std}")
        self.classes = classes
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.stem = _ConvBNReLU(3 + 2 * classes, width, stride=2)
        self.body = nn.ModuleList(_ConvBNReLU(width, width, d) for d in DILATIONS)
        self.head = nn.Conv2d(width, classes, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, image: torch.Tensor, probs: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        h = self.stem(torch.cat([image, probs, pooled], 1))
        for block in self.body:
            h = h + block(h)
        residual = F.interpolate(self.head(h).float(), size=probs.shape[-2:], mode="bilinear",
                                 align_corners=False)  # fmt: skip
        return probs.float().clamp_min(_EPS).log() + residual

    @torch.inference_mode()
    def refine(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Refine one image's class probabilities (numpy in and out, on the refiner's device).

        Args:
            probs: ``(C, H, W)`` class probabilities, background first.
            image: the RGB uint8 image ``(h, w, 3)`` of any size (resized to ``(H, W)``).

        Returns:
            The refined ``(C, H, W)`` float32 probabilities (summing to one).
        """
        if probs.ndim != 3 or probs.shape[0] != self.classes:
            raise ColonsegError(
                f"the refiner takes {self.classes} class probabilities, got {probs.shape[0]}"
            )
        device = next(self.parameters()).device
        x = prepare_images([image], probs.shape[1:], self.mean, self.std).to(device)
        p = torch.from_numpy(np.ascontiguousarray(probs, np.float32))[None].to(device)
        pooled = torch.from_numpy(region_pool(probs))[None].to(device)
        return self.eval()(x, p, pooled).softmax(1)[0].cpu().numpy()


@MODELS.register("region_refiner")
def region_refiner(
    *,
    encoder: str = "tf_efficientnet_lite0",
    in_channels: int = 3,
    classes: int = 3,
    pretrained: bool = False,
    width: int = 24,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> RegionRefiner:
    """A :class:`RegionRefiner` (it has no encoder: ``encoder`` and ``pretrained`` are unused)."""
    return RegionRefiner(classes=classes, width=width, mean=mean, std=std)

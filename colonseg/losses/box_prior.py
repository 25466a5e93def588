"""Box-supervised losses: what a bounding box says about the mask inside it.

* **emptiness** ``L_empty``: no foreground outside the boxes (BCE towards 0 there).
* **tightness** ``L_tightbox`` (Kervadec et al., MIDL 2020): a tight box touches the object on
  every line, so every band of ``d`` rows (columns) across a box holds at least ``d`` pixels of
  foreground probability.
* **size** ``L_size``: the foreground inside a box covers between ``a`` and ``b`` of its area.
* **box prompt** (Gaillochet et al., TBME 2025): BCE + Dice towards the mask the frozen SAM gives
  when prompted with the true box (built from the box alone, no mask).
* **box** (for a prompt module that predicts a box): L1 + generalised IoU between the predicted
  box and the box around the image's true boxes.

Tightness and size constraints ``z <= 0`` (tightness in pixels of foreground mass, size in per
cent of the box area) pass through the log-barrier extension ``psi_t`` (Kervadec et al., MedIA
2022), clamped at zero: a constraint met by at least one unit costs nothing, so the terms never
trade one satisfied constraint against another, and a violated one costs ``t * z`` (finite for
every ``t``; ``t`` grows during training, see :class:`BoxPriorLoss`).

Every loss takes mask logits ``(B, 1, H, W)`` and boxes as a list (one per image) of ``(K, 4)``
tensors ``x0, y0, x1, y1`` in pixels of that grid, inclusive.

Example:
    >>> loss = BoxPriorLoss()                  # defaults: empty 1, tight 1e-4, size 1e-2, t = 5
    >>> total, parts = loss(logits, boxes)     # parts: {"empty": ..., "tight": ..., "size": ...}
    >>> loss.t *= 1.1                          # once per epoch
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BoxPriorLoss",
    "box_loss",
    "box_prompt_loss",
    "box_region",
    "emptiness_loss",
    "log_barrier",
    "size_loss",
    "tightness_loss",
]


def log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """The log-barrier extension ``psi_t(z)``: ``-log(-z)/t`` for ``z <= -1/t^2``, else the
    tangent line ``t*z - log(1/t^2)/t + 1/t`` (continuous, finite for any ``z``)."""
    edge = -1.0 / t**2
    inside = -torch.log(-z.clamp(max=edge)) / t
    outside = t * z - math.log(1.0 / t**2) / t + 1.0 / t
    return torch.where(z <= edge, inside, outside)


def barrier_penalty(z: torch.Tensor, t: float) -> torch.Tensor:
    """``max(psi_t(z), 0)``: zero once ``z <= -1``, growing as the constraint is approached or
    violated."""
    return log_barrier(z, t).clamp_min(0.0)


def _clip(box: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = sorted((min(max(x0, 0), w - 1), min(max(x1, 0), w - 1)))
    y0, y1 = sorted((min(max(y0, 0), h - 1), min(max(y1, 0), h - 1)))
    return x0, y0, x1, y1


def box_region(boxes: list[torch.Tensor], h: int, w: int, device=None) -> torch.Tensor:
    """``(B, 1, H, W)`` float: 1 inside any box of each image."""
    region = torch.zeros(len(boxes), 1, h, w, device=device)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes:
            x0, y0, x1, y1 = _clip(box, h, w)
            region[i, 0, y0 : y1 + 1, x0 : x1 + 1] = 1.0
    return region


def emptiness_loss(logits: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
    """Mean BCE towards background over the pixels outside every box (0 when all are 0)."""
    outside = 1.0 - box_region(boxes, *logits.shape[-2:], device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return ((bce * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp_min(1.0)).mean()


def _band_deficits(crop: torch.Tensor, d: int) -> torch.Tensor:
    """Rows of ``crop`` grouped in bands of ``d``: each band's (line count - foreground mass)."""
    rows = crop.sum(1)  # foreground mass per row
    n = rows.numel()
    pad = (-n) % d
    lines = torch.ones_like(rows)
    rows = F.pad(rows, (0, pad)).view(-1, d).sum(1)
    lines = F.pad(lines, (0, pad)).view(-1, d).sum(1)
    return lines - rows


def tightness_loss(
    logits: torch.Tensor, boxes: list[torch.Tensor], t: float = 5.0, d: int = 5
) -> torch.Tensor:
    """Every band of ``d`` rows and of ``d`` columns across a box holds >= ``d`` pixels of
    foreground (one per line); sum of ``psi_t`` over bands and boxes, mean over images."""
    prob = logits.float().sigmoid()
    h, w = prob.shape[-2:]
    per_image = []
    for i, image_boxes in enumerate(boxes):
        terms = [prob.new_zeros(())]
        for box in image_boxes:
            x0, y0, x1, y1 = _clip(box, h, w)
            crop = prob[i, 0, y0 : y1 + 1, x0 : x1 + 1]
            z = torch.cat([_band_deficits(crop, d), _band_deficits(crop.t(), d)])
            terms.append(barrier_penalty(z, t).sum())
        per_image.append(torch.stack(terms).sum())
    return torch.stack(per_image).mean()


def size_loss(
    logits: torch.Tensor,
    boxes: list[torch.Tensor],
    t: float = 5.0,
    margins: tuple[float, float] = (0.5, 0.9),
) -> torch.Tensor:
    """The foreground inside each box covers ``[a, b]`` of its area; sum of ``psi_t`` over boxes,
    mean over images. The constraint is measured in per cent of the box area (zero once met by
    1 %): in pixels, a 5 % miss on a large box would cost a hundred times that on a small one and
    swamp every other term."""
    prob = logits.float().sigmoid()
    h, w = prob.shape[-2:]
    a, b = margins
    per_image = []
    for i, image_boxes in enumerate(boxes):
        terms = [prob.new_zeros(())]
        for box in image_boxes:
            x0, y0, x1, y1 = _clip(box, h, w)
            share = prob[i, 0, y0 : y1 + 1, x0 : x1 + 1].mean()
            z = 100.0 * torch.stack([a - share, share - b])  # in per cent of the box area
            terms.append(barrier_penalty(z, t).sum())
        per_image.append(torch.stack(terms).sum())
    return torch.stack(per_image).mean()


def box_prompt_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice towards a binary target (the box-prompted SAM mask)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return bce + dice.mean()


def box_loss(pred: torch.Tensor, boxes: list[torch.Tensor], side: int) -> torch.Tensor:
    """L1 + generalised IoU (Rezatofighi et al., CVPR 2019) between predicted boxes ``(B, 4)``
    in [0, 1] and the box around each image's true boxes (pixels of a ``side`` grid); images
    without a box are left out."""
    from torchvision.ops import generalized_box_iou_loss

    keep = [i for i, b in enumerate(boxes) if len(b)]
    if not keep:
        return pred.sum() * 0.0
    target = (
        torch.stack(
            [
                torch.cat([boxes[i][:, :2].min(0).values, boxes[i][:, 2:].max(0).values])
                for i in keep
            ]
        ).to(pred.device)
        / side
    )
    pred = pred[keep].float()
    return F.l1_loss(pred, target) + generalized_box_iou_loss(pred, target, reduction="mean")


class BoxPriorLoss(nn.Module):
    """``w_empty * L_empty + w_tight * L_tightbox + w_size * L_size (+ w_prompt * L_box_prompt
    + w_box * L_box)``; a term whose weight is 0 is not computed.

    Args:
        empty, tight, size, prompt, box: the weights (defaults: the Automatic MedSAM paper's 1,
            1e-4, 1e-2; the box-prompt and box terms off).
        t: the log-barrier's starting ``t``; the trainer multiplies it by ``t_growth`` each epoch.
        band: the tightness band width ``d`` in pixels.
        size_margins: ``[a, b]``.
    """

    def __init__(
        self,
        empty: float = 1.0,
        tight: float = 1e-4,
        size: float = 1e-2,
        prompt: float = 0.0,
        box: float = 0.0,
        t: float = 5.0,
        band: int = 5,
        size_margins: tuple[float, float] = (0.5, 0.9),
    ) -> None:
        super().__init__()
        self.weights = {"empty": empty, "tight": tight, "size": size, "prompt": prompt, "box": box}
        self.t, self.band, self.size_margins = float(t), int(band), tuple(size_margins)

    def forward(
        self,
        logits: torch.Tensor,
        boxes: list[torch.Tensor],
        prompt_target: torch.Tensor | None = None,
        pred_box: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``pred_box``: the prompt module's boxes ``(B, 4)`` in [0, 1] of the logits' grid."""
        terms = {
            "empty": lambda: emptiness_loss(logits, boxes),
            "tight": lambda: tightness_loss(logits, boxes, self.t, self.band),
            "size": lambda: size_loss(logits, boxes, self.t, self.size_margins),
        }
        parts = {k: f() for k, f in terms.items() if self.weights[k] > 0}
        if self.weights["prompt"] > 0:
            if prompt_target is None:
                raise ValueError("the box-prompt term needs the box-prompted masks")
            parts["prompt"] = box_prompt_loss(logits, prompt_target)
        if self.weights["box"] > 0:
            if pred_box is None:
                raise ValueError("the box term needs the predicted boxes (sparse=box)")
            parts["box"] = box_loss(pred_box, boxes, logits.shape[-1])
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}

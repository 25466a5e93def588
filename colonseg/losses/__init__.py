"""Segmentation losses by name (``loss.name`` in the config).

``bce``       binary cross-entropy on logits.
``dice``      soft Dice (Milletari et al., 3DV 2016), binary or multi-class.
``bce_dice``  BCE + Dice, the usual polyp recipe.
``ce_dice``   cross-entropy + Dice for multi-class masks.

All take ``(pred logits (B, C, H, W), target)``: binary targets ``(B, 1, H, W)`` in {0, 1}.
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from colonseg.registry import Registry

__all__ = ["LOSSES", "ComboLoss", "create_loss"]

LOSSES = Registry("loss")


class ComboLoss(nn.Module):
    """A weighted sum of losses over the same ``(pred, target)``.

    Example:
        >>> loss = ComboLoss([nn.BCEWithLogitsLoss(), DiceLoss("binary")], [1.0, 1.0])
        >>> loss(logits, mask)
    """

    def __init__(self, losses: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(
            w * loss(pred, target) for w, loss in zip(self.weights, self.losses, strict=True)
        )


class _CrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy taking class-index targets shaped ``(B, 1, H, W)`` or ``(B, H, W)``."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 4:
            target = target[:, 0]
        return super().forward(pred, target.long())


@LOSSES.register("bce")
def _bce(classes: int = 1) -> nn.Module:
    return nn.BCEWithLogitsLoss()


@LOSSES.register("dice")
def _dice(classes: int = 1) -> nn.Module:
    return DiceLoss("binary" if classes == 1 else "multiclass", from_logits=True)


@LOSSES.register("bce_dice")
def _bce_dice(classes: int = 1, bce_weight: float = 1.0, dice_weight: float = 1.0) -> nn.Module:
    return ComboLoss([_bce(), _dice()], [bce_weight, dice_weight])


@LOSSES.register("ce_dice")
def _ce_dice(classes: int = 2, ce_weight: float = 1.0, dice_weight: float = 1.0) -> nn.Module:
    return ComboLoss([_CrossEntropy(), _dice(classes)], [ce_weight, dice_weight])


def create_loss(name: str, classes: int = 1, **kwargs) -> nn.Module:
    return LOSSES.create(name, classes=classes, **kwargs)

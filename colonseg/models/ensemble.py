"""``ensemble``: several trained models of one task as one model, averaging their probabilities.

Independently trained runs of the same recipe disagree most where each is unsure, so the mean
of their probabilities ranks pixels better than any one of them (variance reduction, at the
cost of one forward pass per member). Members keep their own architectures and weights; the
ensemble returns logits like any model — ``logit(mean sigmoid)`` for one class,
``log(mean softmax)`` for several — so the Predictor, TTA, evaluation and export treat it as
one network. Build one from checkpoints with ``colonseg ensemble``
(:mod:`colonseg.engine.ensemble`); its ``config.json`` names every member's architecture
and options.

Example:
    >>> net = create_model("ensemble", members=[{"arch": "unet", "init_kwargs": {...}}] * 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.registry import MODELS, create_model

__all__ = ["Ensemble"]

_EPS = 1e-6


class Ensemble(nn.Module):
    """The mean of ``members``' probabilities (see the module docstring), as logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ColonsegError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)
        reasons = [getattr(m, "onnx_unsupported", None) for m in members]
        if any(reasons):  # read by ONNX export, which refuses with it
            self.onnx_unsupported = next(r for r in reasons if r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [member(x).float() for member in self.members]
        if logits[0].shape[1] == 1:
            prob = torch.stack([y.sigmoid() for y in logits]).mean(0)
            return torch.logit(prob, eps=_EPS)
        prob = torch.stack([y.softmax(1) for y in logits]).mean(0)
        return prob.clamp_min(_EPS).log()


@MODELS.register("ensemble")
def ensemble(
    members: Sequence[dict] | None = None,
    encoder: str = "tf_efficientnet_lite0",
    in_channels: int = 3,
    classes: int = 1,
    pretrained: bool = True,
) -> nn.Module:
    """Members given as ``{"arch": name, "init_kwargs": {...}}``, each built with
    ``pretrained``, ``in_channels`` and ``classes``; default: two U-Nets on ``encoder``."""
    if members is None:
        members = [{"arch": "unet", "init_kwargs": {"encoder": encoder}}] * 2
    nets = []
    for member in members:
        kwargs = {"in_channels": in_channels, "classes": classes, **member.get("init_kwargs", {})}
        if kwargs["classes"] != classes:
            raise ColonsegError(f"ensemble member {member['arch']}: classes differ from {classes}")
        nets.append(create_model(member["arch"], **{**kwargs, "pretrained": pretrained}))
    return Ensemble(nets)

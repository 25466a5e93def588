"""``ensemble``: several trained models of one task as one model, averaging their probabilities.

Independently trained runs of the same recipe disagree most where each is unsure, so the mean
of their probabilities ranks pixels better than any one of them (variance reduction, at the
cost of one forward pass per member). Members keep their own architectures and weights; the
ensemble returns logits like any model — ``logit(mean sigmoid)`` for one class,
``log(mean softmax)`` for several — so the Predictor, TTA, evaluation and export treat it as
one network. Build one from checkpoints with :func:`combine_checkpoints` (``colonseg
ensemble``); its ``config.json`` names every member's architecture and options.

Example:
    >>> net = create_model("ensemble", members=[{"arch": "unet", "init_kwargs": {...}}] * 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.registry import MODELS, create_model

__all__ = ["Ensemble", "combine_checkpoints"]

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


def combine_checkpoints(models: Sequence[str | Path], out: str | Path, half: bool = False) -> Path:
    """Write one checkpoint at ``out`` that averages the checkpoints ``models`` (zoo names or
    folders). They must share input size, normalisation, label scheme and classes; the first
    one's threshold, post-processing and TTA become the ensemble's. Each member's tensors are
    stored as its own file stores them (fp16 or fp32), or all in fp16 with ``half``.

    Raises:
        ColonsegError: fewer than two models, or ones that do not see or label images alike.
    """
    from dataclasses import replace

    from colonseg.engine.checkpoint import load_pretrained, save_pretrained, stored_dtypes

    if len(models) < 2:
        raise ColonsegError("colonseg ensemble needs at least two models")
    loaded = [load_pretrained(m) for m in models]
    first = loaded[0][1]
    for model, (_, meta) in zip(models, loaded, strict=True):
        for what in ("size", "mean", "std", "labels", "class_names"):
            if tuple(getattr(meta, what)) != tuple(getattr(first, what)):
                raise ColonsegError(
                    f"{model}: its {what} {getattr(meta, what)} differs from {models[0]}'s "
                    f"{getattr(first, what)}; an ensemble's members must see and label alike"
                )
    members = [{"arch": meta.arch, "init_kwargs": meta.init_kwargs} for _, meta in loaded]
    meta = replace(
        first,
        arch="ensemble",
        init_kwargs={"members": members, "classes": first.init_kwargs.get("classes", 1)},
        packaged=[f"members.{i}.{p}" for i, (_, m) in enumerate(loaded) for p in m.packaged],
        provenance={
            "command": f"colonseg ensemble {' '.join(map(str, models))} --out {out}"
            + (" --half" if half else ""),
            "ensemble_of": [
                {"model": str(model), "provenance": m.provenance}
                for model, (_, m) in zip(models, loaded, strict=True)
            ],
        },
        metrics={},
    )
    # without half, each member's tensors keep the dtype its own file stored them in
    dtypes = {
        f"members.{i}.{k}": t for i, m in enumerate(models) for k, t in stored_dtypes(m).items()
    }
    return save_pretrained(Ensemble([net for net, _ in loaded]), meta, out, half, dtypes)

"""``combine_checkpoints``: several trained checkpoints of one task saved as one ensemble model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from colonseg.engine.checkpoint import (
    load_pretrained,
    merge_trained_on,
    save_pretrained,
    stored_dtypes,
)
from colonseg.errors import ColonsegError
from colonseg.models.ensemble import Ensemble

__all__ = ["combine_checkpoints"]


def combine_checkpoints(models: Sequence[str | Path], out: str | Path, half: bool = False) -> Path:
    """Write one checkpoint at ``out`` that averages the checkpoints ``models`` (zoo names or
    folders). They must share input size, normalisation, label scheme and classes; the first
    one's threshold, post-processing and TTA become the ensemble's. Each member's tensors are
    stored as its own file stores them (fp16 or fp32), or all in fp16 with ``half``.

    Raises:
        ColonsegError: fewer than two models, or ones that do not see or label images alike.
    """
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
        trained_on=merge_trained_on(*(m.trained_on for _, m in loaded)),
    )
    # without half, each member's tensors keep the dtype its own file stored them in
    dtypes = {
        f"members.{i}.{k}": t for i, m in enumerate(models) for k, t in stored_dtypes(m).items()
    }
    return save_pretrained(Ensemble([net for net, _ in loaded]), meta, out, half, dtypes)

"""The one device choice: where a model runs, and whether bf16 is native there."""

from __future__ import annotations

import torch

__all__ = ["native_bf16", "resolve_device"]


def resolve_device(name: str = "auto") -> str:
    """``auto`` (or a Lightning accelerator name: ``gpu``) → ``cuda`` when a GPU is there, else
    ``cpu``; ``cpu``/``cuda``/``cuda:N`` pass through."""
    if name in ("auto", "gpu"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (so autocast speeds it up)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )

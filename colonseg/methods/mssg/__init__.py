"""MSSG: unsupervised gland segmentation (selective proposal mining + morphology-aware grouping)."""

from __future__ import annotations

from colonseg.methods.mssg.method import Mssg

__all__ = ["Mssg"]

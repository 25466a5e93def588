"""MAPSeg: unsupervised polyp segmentation from normal frames (SIMPO synthetic lesions)."""

from __future__ import annotations

from colonseg.methods.mapseg.method import Mapseg

__all__ = ["Mapseg"]

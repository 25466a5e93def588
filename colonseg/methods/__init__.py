"""Training methods. Importing this package registers each one in ``METHODS``."""

from __future__ import annotations

from colonseg.methods import (  # noqa: F401  (importing registers each method)
    mapseg,
    medsam_box,
    mssg,
    refine,
    supervised,
)
from colonseg.methods.base import METHODS, Method

__all__ = ["METHODS", "Method"]

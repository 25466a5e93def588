"""Training methods. Importing this package registers each one in ``METHODS``."""

from __future__ import annotations

from colonseg.methods import mapseg, medsam_box, mssg, supervised  # noqa: F401  (registers)
from colonseg.methods.base import METHODS, Method

__all__ = ["METHODS", "Method"]

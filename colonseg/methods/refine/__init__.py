from __future__ import annotations

from colonseg.methods.refine.method import Refine
from colonseg.methods.refine.module import RefineModule

__all__ = ["Refine", "RefineModule"]

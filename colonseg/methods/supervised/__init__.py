from __future__ import annotations

from colonseg.methods.supervised.method import Supervised
from colonseg.methods.supervised.module import SupervisedModule

__all__ = ["Supervised", "SupervisedModule"]

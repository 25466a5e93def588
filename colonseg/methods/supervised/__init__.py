from __future__ import annotations

from colonseg.methods.supervised.module import SupervisedModule

__all__ = ["SupervisedModule"]

"""colonseg: segmentation of colorectal images (polyps, glands) with full, box or no labels.

Example:
    >>> import colonseg
    >>> predictor = colonseg.Predictor.from_pretrained("default")
    >>> mask = predictor.predict(colonseg.read_image("frame.jpg")).mask

The public names are imported on first use (PEP 562), so ``import colonseg`` and the command
line's ``--help`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colonseg.data.io import read_image, read_mask
    from colonseg.engine.checkpoint import load_pretrained
    from colonseg.engine.predict import Predictor
    from colonseg.models import create_model, list_models

__all__ = ["Predictor", "create_model", "list_models", "load_pretrained", "read_image", "read_mask"]
__version__ = "0.1.0"

_LAZY = {
    "Predictor": "colonseg.engine.predict",
    "create_model": "colonseg.models",
    "list_models": "colonseg.models",
    "load_pretrained": "colonseg.engine.checkpoint",
    "read_image": "colonseg.data.io",
    "read_mask": "colonseg.data.io",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'colonseg' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

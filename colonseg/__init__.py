"""colonseg: segmentation of colorectal images (polyps, glands) with full, box or no labels.

Example:
    >>> import colonseg
    >>> predictor = colonseg.Predictor.from_pretrained("default")
    >>> mask = predictor.predict(colonseg.read_image("frame.jpg")).mask
"""

from __future__ import annotations

from colonseg.data.io import read_image, read_mask
from colonseg.engine.checkpoint import load_pretrained
from colonseg.engine.predict import Predictor
from colonseg.models import create_model, list_models

__all__ = ["Predictor", "create_model", "list_models", "load_pretrained", "read_image", "read_mask"]
__version__ = "0.1.0"

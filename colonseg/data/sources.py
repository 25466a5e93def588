"""``DataSource``: one dataset folder, its layout and split — for training and evaluation alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataSource"]


@dataclass
class DataSource:
    """One dataset folder, its layout (``auto`` detects it), an optional split file or name, and
    the name it is reported under (default: the folder name, plus the split).

    Example:
        >>> DataSource("../shared/datasets/kvasir-seg", split="pranet_test").display_name()
        'kvasir-seg:pranet_test'
    """

    path: str
    split: str | None = None
    layout: str = "auto"
    name: str | None = None

    def display_name(self) -> str:
        if self.name:
            return self.name
        base = Path(self.path).resolve().name
        return f"{base}:{Path(self.split).stem}" if self.split else base

"""Name-based registries for models, datasets, losses and augmentation pipelines.

Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("unet")
    ... def unet(**kw): ...
    >>> MODELS.create("unet", encoder="tf_efficientnet_lite0")
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from colonseg.errors import ColonsegError

__all__ = ["Registry", "look_up_option"]


def look_up_option(value: str, options: list[str] | tuple[str, ...], what: str = "option") -> str:
    """Return ``value`` if it is one of ``options``, else raise a did-you-mean ValueError."""
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), list(options), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ColonsegError(f"Unknown {what} '{value}'.{hint} Available: {', '.join(sorted(options))}.")


class Registry:
    """A name → factory mapping with did-you-mean errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        return self._items[look_up_option(name, tuple(self._items), self.kind)]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items

"""The one exception type that reaches users as a one-line message."""

from __future__ import annotations

__all__ = ["ColonsegError"]


class ColonsegError(ValueError):
    """A problem with the user's input: the message names the file and what to do."""

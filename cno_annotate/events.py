"""A minimal observer list, so that models can tell views what changed without Qt."""

from __future__ import annotations

from collections.abc import Callable


class Event:
    """Callbacks called in order on :meth:`emit`."""

    def __init__(self) -> None:
        self._callbacks: list[Callable] = []

    def connect(self, callback: Callable) -> None:
        """Call ``callback(*args)`` on every emit."""
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable) -> None:
        """Stop calling ``callback``."""
        self._callbacks.remove(callback)

    def emit(self, *args) -> None:
        """Call every connected callback."""
        for callback in list(self._callbacks):
            callback(*args)

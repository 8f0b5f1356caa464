"""The small interfaces between stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.points import Point


class TimeSeriesSink(Protocol):
    """Where points are stored. Writing the same point twice must store it once."""

    name: str

    def write(self, points: Sequence[Point]) -> None:
        """Store the points, or raise `StoreError` saying whether a retry may help."""
        ...

    def ping(self) -> bool:
        """True when the store answers."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

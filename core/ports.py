"""The small interfaces between stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from core.points import Point

if TYPE_CHECKING:
    from core.eventlog import LogEvent, NewEvent
    from core.readings import ReadingsQuery, Series


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


class ReadingsSource(Protocol):
    """Where the API reads a device's readings back: InfluxDB 1.x or 2.x, or the embedded
    store; downsampled by the store itself."""

    def readings(self, query: ReadingsQuery) -> Series:
        """The mean of each field per bucket of `query.every_s` seconds (aligned to the
        epoch), oldest first; empty buckets left out. StoreError when the store does not
        answer or refuses the query."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class EventCursor(Protocol):
    """A reader's place in the event log."""

    position: int  # the last event returned
    gap: tuple[int, int] | None  # events pruned before this reader got to them, if any

    def next_batch(self, limit: int) -> list[LogEvent]:
        """Up to `limit` events after `position` (may block on disk: see `from_memory`)."""
        ...

    def from_memory(self) -> bool:
        """True when `next_batch` will not touch the disk."""
        ...

    def close(self) -> None:
        """Release what it holds open."""
        ...


class EventLog(Protocol):
    """The ordered, durable log of alert and ticket changes (core/eventlog.py)."""

    @property
    def head(self) -> int:
        """The position of the last durable event."""
        ...

    @property
    def first(self) -> int:
        """The oldest position still readable."""
        ...

    @property
    def error(self) -> str | None:
        """Why appending fails, while it does."""
        ...

    def append(self, events: Sequence[NewEvent]) -> int:
        """Make events durable in order; the last one's position. Raises OSError."""
        ...

    def cursor(self, after: int) -> EventCursor:
        """A reader of the events after `after`."""
        ...

    def wait_beyond(self, position: int, timeout: float) -> bool:
        """Block this thread until an event after `position` exists, or the timeout."""
        ...

    async def wait_async(self, position: int, within_s: float) -> bool:
        """The same on the event loop."""
        ...

    def note(self, consumer: str, position: int) -> None:
        """A consumer's progress, which pruning respects."""
        ...

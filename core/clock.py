"""Time, injectable so that rules and windows can be tested without sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol


class Clock(Protocol):
    """Where the current time comes from."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        """The current fake time."""
        return self._now

    def monotonic(self) -> float:
        """Fake monotonic seconds."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, the precision of every stored point."""
    # Integer arithmetic: `int(moment.timestamp() * 1000)` goes through a float and turns some
    # exact milliseconds into the one before (2004-02-22T07:01:02.804Z became ...803).
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, the form every output uses."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local_text(moment: datetime, zone: tzinfo, *, seconds: bool = True) -> str:
    """A time as people read it: `2026-12-02 21:05:09` in `zone` (the centre's time zone,
    `[display] timezone`)."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

"""A time-series point as every sink receives it (contract section 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

FieldValue = float | int | bool | str


class Point(NamedTuple):
    """One point: measurement, sorted tags, fields and time in epoch milliseconds."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ms: int

    def to_wire(self) -> list[object]:
        """A compact JSON-able form for the spool."""
        return [self.measurement, self.tags, self.fields, self.time_ms]

    @classmethod
    def from_wire(cls, wire: list[object]) -> Point:
        """The inverse of `to_wire`."""
        measurement, tags, fields, time_ms = wire
        assert isinstance(measurement, str) and isinstance(tags, dict)
        assert isinstance(fields, dict) and isinstance(time_ms, int)
        return cls(measurement, tags, fields, time_ms)


class SeriesStamper:
    """Gives each point of a series a millisecond of its own.

    A point is identified by measurement, tags and time (contract section 2): two changes of
    one series in the same millisecond (a smoke alarm raised and confirmed by the same
    message) would otherwise be one point. The later one is moved on by a millisecond.
    """

    KEPT = 10_000  # series remembered; only the last second of each matters

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], int] = {}

    def stamp(self, point: Point) -> Point:
        """The point, moved on if its series has a point at that time already."""
        series = (point.measurement, *point.tags.values())
        time_ms = max(point.time_ms, self._last.get(series, 0) + 1)
        self._last[series] = time_ms
        if len(self._last) > self.KEPT:
            recent = time_ms - 1000
            self._last = {k: v for k, v in self._last.items() if v >= recent}
        return point._replace(time_ms=time_ms)

    def batch(self, points: list[Point], write: Callable[[list[Point]], None]) -> None:
        """Stamp and write a batch; if the write fails, forget its stamps, so that a retry
        stamps the same points the same way (a point written twice is then one point)."""
        saved = dict(self._last)
        try:
            write([self.stamp(point) for point in points])
        except BaseException:
            self._last = saved
            raise

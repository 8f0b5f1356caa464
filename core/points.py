"""A time-series point as every sink receives it (contract section 2)."""

from __future__ import annotations

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

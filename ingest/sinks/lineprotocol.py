"""InfluxDB line protocol for `Point`s.

influxdb-client's `Point.to_line_protocol` takes about 36 µs a point on our 2-core machines,
a third of a core at 10,000 msg/s; this encoder does the same in a few µs. Its output is
tested byte for byte against the library's (tests/unit/test_lineprotocol.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from core.points import FieldValue, Point

# Escaping rules: https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    return '"' + value.translate(_STRING) + '"'


_SERIES_CACHE_MAX = 100_000
_series_cache: dict[tuple[object, ...], str] = {}


def _series(point: Point) -> str:
    key = (point.measurement, *point.tags.items())
    series = _series_cache.get(key)
    if series is None:
        parts = [point.measurement.translate(_MEASUREMENT)]
        for tag in sorted(point.tags):
            value = point.tags[tag]
            if value:  # InfluxDB drops empty tag values
                parts.append(f"{tag.translate(_KEY)}={value.translate(_KEY)}")
        series = ",".join(parts)
        if len(_series_cache) >= _SERIES_CACHE_MAX:
            _series_cache.clear()
        _series_cache[key] = series
    return series


def encode(point: Point) -> str:
    """One point as a line (without the newline), time in milliseconds."""
    fields = point.fields
    body = ",".join(f"{key.translate(_KEY)}={_field(fields[key])}" for key in sorted(fields))
    return f"{_series(point)} {body} {point.time_ms}"


def encode_many(points: Iterable[Point]) -> bytes:
    """A write body: one line per point."""
    return "\n".join(encode(p) for p in points).encode("utf-8")

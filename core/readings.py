"""A device's readings over a time range, downsampled: what may be asked, and the bucket size.

The readings chart of the console asks for days of a device's telemetry; a detector sending
every 30 s makes 2,880 points a day per field, and the store answers with at most
`MAX_POINTS` means per field instead (contract section 2: measurement `reading`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.errors import InvalidInputError

# The `reading` fields of contract section 2 that a chart can show (floats: `alarm` and `seq`
# are not readings to average).
READING_FIELDS = (
    "smoke_db_m",
    "gas_lel_pct",
    "co_ppm",
    "temperature_c",
    "battery_pct",
    "rssi_dbm",
)
MAX_POINTS = 1000  # per field: the most a chart of a phone or a 1920 px screen can show
MAX_RANGE = timedelta(days=90)
DEFAULT_RANGE = timedelta(hours=24)
# Bucket sizes, in seconds: the smallest that keeps a range within MAX_POINTS is taken, so
# buckets start at round times (InfluxDB aligns them to the epoch, as the embedded store does).
STEPS_S = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
# Times the stores agree on: InfluxDB keeps 1677-2262; the embedded store's buckets, and any
# device clock (epoch milliseconds), start in 1970.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ReadingsQuery:
    """One device's fields from `start` (inclusive) to `stop` (exclusive), in buckets of
    `every_s` seconds aligned to the epoch."""

    device: str
    start: datetime
    stop: datetime
    every_s: int
    fields: tuple[str, ...]


# field -> [(bucket start, mean)], oldest first; a bucket without a value is left out
Series = dict[str, list[tuple[datetime, float]]]


def smallest_every(start: datetime, stop: datetime) -> int:
    """The smallest bucket of STEPS_S that gives at most MAX_POINTS buckets."""
    wanted = (stop - start).total_seconds() / MAX_POINTS
    for step in STEPS_S:
        if step >= wanted:
            return step
    return math.ceil(wanted)


def choose_fields(asked: Iterable[str] | None) -> tuple[str, ...]:
    """The fields asked for (repeated or comma-separated), in the contract's order; all if
    none. InvalidInputError names an unknown one."""
    names = {part.strip() for value in asked or () for part in value.split(",") if part.strip()}
    unknown = sorted(names - set(READING_FIELDS))
    if unknown:
        raise InvalidInputError(
            f"no reading field {unknown[0]!r}: one of {', '.join(READING_FIELDS)}"
        )
    return tuple(f for f in READING_FIELDS if not names or f in names)


def readings_query(
    device: str,
    *,
    start: datetime | None,
    stop: datetime | None,
    every_s: int | None,
    fields: Iterable[str] | None,
    now: datetime,
) -> ReadingsQuery:
    """The query for these parameters: `stop` now and `start` a day before unless given,
    `every_s` raised to keep within MAX_POINTS. InvalidInputError says what is wrong."""
    stop = (stop or now).astimezone(UTC)
    if start is None:
        if stop - EARLIEST < DEFAULT_RANGE:
            raise InvalidInputError("`to` must be a day or more after 1970-01-01 without `from`")
        start = stop - DEFAULT_RANGE
    start = start.astimezone(UTC)
    for name, value in (("from", start), ("to", stop)):
        if not EARLIEST <= value < LATEST:
            raise InvalidInputError(f"`{name}` must be between 1970-01-01 and 2200-01-01 (UTC)")
    if stop <= start:
        raise InvalidInputError("`to` must be after `from`")
    if stop - start > MAX_RANGE:
        raise InvalidInputError(f"at most {MAX_RANGE.days} days from `from` to `to`")
    least = smallest_every(start, stop)
    return ReadingsQuery(
        device=device,
        start=start,
        stop=stop,
        every_s=max(every_s or least, least),
        fields=choose_fields(fields),
    )


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since 1970 (UTC)."""
    return (moment - EARLIEST) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    """The UTC time of epoch milliseconds."""
    return EARLIEST + timedelta(milliseconds=ms)

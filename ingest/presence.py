"""What is known of each device right now: last seen, online, latest reading."""

from __future__ import annotations

import math
import threading
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter

from core.models import MEASUREMENT_FIELDS, Event, EventType, Status, Telemetry
from ingest.messages import Accepted
from ingest.metrics import IngestMetrics

_NEVER = -math.inf  # "no reading yet" in a column of epoch seconds
_ABSENT = math.nan  # a measurement the latest reading did not carry (the parser refuses NaN)
_FIELDS = len(MEASUREMENT_FIELDS)
_NO_MEASUREMENT = (None,) * _FIELDS
_NO_READING = array("d", [_ABSENT] * _FIELDS)
_measurements = attrgetter(*MEASUREMENT_FIELDS)
_SEQ_LIMIT = 2**64 - 1
# Bits of a device's flags byte.
_ONLINE, _ALARM_FALSE, _ALARM_TRUE, _HAS_SEQ = 1, 2, 4, 8
_ALARM = _ALARM_FALSE | _ALARM_TRUE


@dataclass(slots=True)
class DeviceState:
    """The live state of one device, as `Presence.get` hands it out."""

    last_seen: datetime
    online: bool = True
    reading_at: datetime | None = None
    reading: dict[str, float | bool] = field(default_factory=dict)
    last_seq: int | None = None  # highest `seq` received since the device last counted anew
    missing: int = 0  # messages skipped in `seq` and not received late


class Presence:
    """A receive-path listener that keeps each device's state, in memory.

    The state is held in columns (arrays of machine numbers) indexed by a number per device,
    not in an object per device: about 100 bytes a device instead of about 500, for fleets
    of a million.
    """

    def __init__(self, metrics: IngestMetrics | None = None) -> None:
        self._index: dict[str, int] = {}
        self._seen = array("d")  # epoch seconds (receive times are whole milliseconds)
        self._reading_at = array("d")
        self._values = array("d")  # _FIELDS per device, in MEASUREMENT_FIELDS order
        self._flags = bytearray()
        self._last_seq = array("Q")  # seq is at most 2**64 - 1: orjson reads larger as floats
        self._missing = array("Q")
        self._lock = threading.Lock()
        self._metrics = metrics

    def __call__(self, accepted: Accepted) -> None:
        """Update from one accepted message."""
        message = accepted.message
        seen = accepted.raw.received_at.timestamp()
        with self._lock:
            i = self._index.get(message.device)
            if i is None:
                i = self._add(message.device, seen)
            elif seen > self._seen[i]:
                self._seen[i] = seen
            if message.seq is not None:
                self._count(i, message.seq, restarted=_restarted(message))
            if isinstance(message, Status):
                flags = self._flags[i]
                self._flags[i] = flags | _ONLINE if message.online else flags & ~_ONLINE
                return
            self._flags[i] |= _ONLINE
            if isinstance(message, Telemetry):
                self._reading(i, message)

    def _add(self, device: str, seen: float) -> int:
        i = self._index[device] = len(self._seen)
        self._seen.append(seen)
        self._reading_at.append(_NEVER)
        self._values.extend(_NO_READING)
        self._flags.append(_ONLINE)
        self._last_seq.append(0)
        self._missing.append(0)
        return i

    def _reading(self, i: int, message: Telemetry) -> None:
        """Keep the reading if it is one (not a heartbeat) and not older than the one kept."""
        values, alarm = _measurements(message), message.alarm
        if alarm is None and values == _NO_MEASUREMENT:
            return
        at = message.ts.timestamp()
        if at < self._reading_at[i]:
            return
        self._reading_at[i] = at
        base = i * _FIELDS
        self._values[base : base + _FIELDS] = array(
            "d", [_ABSENT if v is None else v for v in values]
        )
        flags = self._flags[i] & ~_ALARM
        if alarm is not None:
            flags |= _ALARM_TRUE if alarm else _ALARM_FALSE
        self._flags[i] = flags

    def _count(self, i: int, seq: int, *, restarted: bool) -> None:
        """Gaps in `seq` (contract section 1): messages the broker never delivered.

        Duplicates never come here (ingestion drops them first). A lower `seq` is a message
        that arrived late, filling a gap, unless the device started counting again (a
        `power_on` event, or `seq` 0 or 1).
        """
        last = self._last_seq[i]
        if not self._flags[i] & _HAS_SEQ or restarted or seq <= 1 < last:
            self._last_seq[i] = seq
            self._flags[i] |= _HAS_SEQ
        elif seq > last:
            skipped = seq - last - 1
            self._last_seq[i] = seq
            if skipped:
                self._missing[i] = min(self._missing[i] + skipped, _SEQ_LIMIT)
                if self._metrics is not None:
                    self._metrics.seq_missing.inc(skipped)
        elif self._missing[i]:
            self._missing[i] -= 1
            if self._metrics is not None:
                self._metrics.seq_late.inc()

    def get(self, device: str) -> DeviceState | None:
        """A copy of the device's state, or None if it was never heard from."""
        with self._lock:
            i = self._index.get(device)
            if i is None:
                return None
            reading_at, flags = self._reading_at[i], self._flags[i]
            return DeviceState(
                _time(self._seen[i]),
                bool(flags & _ONLINE),
                None if reading_at == _NEVER else _time(reading_at),
                self._latest(i),
                self._last_seq[i] if flags & _HAS_SEQ else None,
                self._missing[i],
            )

    def _latest(self, i: int) -> dict[str, float | bool]:
        base = i * _FIELDS
        values: dict[str, float | bool] = {
            name: value
            for n, name in enumerate(MEASUREMENT_FIELDS)
            if not math.isnan(value := self._values[base + n])
        }
        if self._flags[i] & _ALARM:
            values["alarm"] = bool(self._flags[i] & _ALARM_TRUE)
        return values

    def __len__(self) -> int:
        return len(self._index)


def _time(seconds: float) -> datetime:
    # Rounded to the millisecond: the times kept are whole milliseconds (contract section 2).
    return datetime.fromtimestamp(round(seconds, 3), UTC)


def _restarted(message: object) -> bool:
    return isinstance(message, Event) and message.type is EventType.POWER_ON

"""What is known of each device right now: last seen, online, latest reading."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from core.models import MEASUREMENT_FIELDS, Event, EventType, Status, Telemetry
from ingest.messages import Accepted
from ingest.metrics import IngestMetrics


@dataclass(slots=True)
class DeviceState:
    """The live state of one device."""

    last_seen: datetime
    online: bool = True
    reading_at: datetime | None = None
    reading: dict[str, float | bool] = field(default_factory=dict)
    last_seq: int | None = None  # highest `seq` received since the device last counted anew
    missing: int = 0  # messages skipped in `seq` and not received late


class Presence:
    """A receive-path listener that keeps `DeviceState` per device, in memory."""

    def __init__(self, metrics: IngestMetrics | None = None) -> None:
        self._states: dict[str, DeviceState] = {}
        self._lock = threading.Lock()
        self._metrics = metrics

    def __call__(self, accepted: Accepted) -> None:
        """Update from one accepted message."""
        message = accepted.message
        seen = accepted.raw.received_at
        with self._lock:
            state = self._states.get(message.device)
            if state is None:
                state = self._states[message.device] = DeviceState(last_seen=seen)
            state.last_seen = max(state.last_seen, seen)
            if message.seq is not None:
                self._count(state, message.seq, restarted=_restarted(message))
            if isinstance(message, Status):
                state.online = message.online
                return
            state.online = True
            newer = state.reading_at is None or message.ts >= state.reading_at
            if isinstance(message, Telemetry) and not message.is_heartbeat and newer:
                state.reading_at = message.ts
                state.reading = _reading(message)

    def _count(self, state: DeviceState, seq: int, *, restarted: bool) -> None:
        """Gaps in `seq` (contract section 1): messages the broker never delivered.

        Duplicates never come here (ingestion drops them first). A lower `seq` is a message
        that arrived late, filling a gap, unless the device started counting again (a
        `power_on` event, or `seq` 0 or 1).
        """
        last = state.last_seq
        if last is None or restarted or seq <= 1 < last:
            state.last_seq = seq
        elif seq > last:
            skipped = seq - last - 1
            state.last_seq = seq
            if skipped:
                state.missing += skipped
                if self._metrics is not None:
                    self._metrics.seq_missing.inc(skipped)
        elif state.missing:
            state.missing -= 1
            if self._metrics is not None:
                self._metrics.seq_late.inc()

    def get(self, device: str) -> DeviceState | None:
        """A copy of the device's state, or None if it was never heard from."""
        with self._lock:
            state = self._states.get(device)
            if state is None:
                return None
            return DeviceState(
                state.last_seen,
                state.online,
                state.reading_at,
                dict(state.reading),
                state.last_seq,
                state.missing,
            )


def _reading(message: Telemetry) -> dict[str, float | bool]:
    values: dict[str, float | bool] = {
        name: value for name in MEASUREMENT_FIELDS if (value := getattr(message, name)) is not None
    }
    if message.alarm is not None:
        values["alarm"] = message.alarm
    return values


def _restarted(message: object) -> bool:
    return isinstance(message, Event) and message.type is EventType.POWER_ON

"""What is known of each device right now: last seen, online, latest reading."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from core.models import MEASUREMENT_FIELDS, Status, Telemetry
from ingest.messages import Accepted


@dataclass(slots=True)
class DeviceState:
    """The live state of one device."""

    last_seen: datetime
    online: bool = True
    reading_at: datetime | None = None
    reading: dict[str, float | bool] = field(default_factory=dict)


class Presence:
    """A receive-path listener that keeps `DeviceState` per device, in memory."""

    def __init__(self) -> None:
        self._states: dict[str, DeviceState] = {}
        self._lock = threading.Lock()

    def __call__(self, accepted: Accepted) -> None:
        """Update from one accepted message."""
        message = accepted.message
        seen = accepted.raw.received_at
        with self._lock:
            state = self._states.get(message.device)
            if state is None:
                state = self._states[message.device] = DeviceState(last_seen=seen)
            state.last_seen = max(state.last_seen, seen)
            if isinstance(message, Status):
                state.online = message.online
                return
            state.online = True
            newer = state.reading_at is None or message.ts >= state.reading_at
            if isinstance(message, Telemetry) and not message.is_heartbeat and newer:
                state.reading_at = message.ts
                state.reading = _reading(message)

    def get(self, device: str) -> DeviceState | None:
        """A copy of the device's state, or None if it was never heard from."""
        with self._lock:
            state = self._states.get(device)
            if state is None:
                return None
            return DeviceState(state.last_seen, state.online, state.reading_at, dict(state.reading))


def _reading(message: Telemetry) -> dict[str, float | bool]:
    values: dict[str, float | bool] = {
        name: value for name in MEASUREMENT_FIELDS if (value := getattr(message, name)) is not None
    }
    if message.alarm is not None:
        values["alarm"] = message.alarm
    return values

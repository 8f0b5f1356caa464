"""Where devices hang (building, floor, room), for notices: the registry read once per device
and kept a while; the receive path's directory keeps no locations (memory per device)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.registry.models import Device

log = logging.getLogger(__name__)

KEEP_S = 600.0  # a device moved in the registry shows in notices within this
MOST = 20_000  # entries kept; beyond, the oldest go


class DevicePlaces:
    """A lookup of registry entries by device id that never raises: a notice without a room
    beats no notice while the database is away."""

    def __init__(
        self,
        fetch: Callable[[str], Device | None],
        *,
        away: Callable[[], bool] = lambda: False,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._away = away
        self._keep_s = keep_s
        self._clock = clock
        self._known: dict[str, tuple[float, Device | None]] = {}
        self._lock = threading.Lock()

    def __call__(self, device_id: str) -> Device | None:
        """The device's registry entry, or None (unknown, or the database away)."""
        now = self._clock()
        with self._lock:
            hit = self._known.get(device_id)
        if hit is not None and now - hit[0] < self._keep_s:
            return hit[1]
        stale = hit[1] if hit is not None else None
        if self._away():
            return stale
        try:
            found = self._fetch(device_id)
        except Exception as exc:  # noqa: BLE001 - the notice goes out without the place
            log.warning("device %s: no place for the notice: %s", device_id, exc)
            return stale
        with self._lock:
            if len(self._known) >= MOST:
                del self._known[next(iter(self._known))]
            self._known[device_id] = (now, found)
        return found

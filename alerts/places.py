"""Where devices hang (building, floor, room), for notices, without a database read on the way.

The receive path's directory keeps no locations (memory per device), and a notice must not wait
on a hung database: the places are read in one go at start and again in a background thread
when older than `keep_s`; a lookup only reads memory. A device added since shows its place
after the next reload; until then its notice goes without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from core.models import DeviceKind
from core.registry.models import Device, Location

log = logging.getLogger(__name__)

KEEP_S = 600.0  # a device moved in the registry shows in notices within this


class DevicePlaces:
    """Device id → its registry entry's location, from memory; never raises, never blocks."""

    def __init__(
        self,
        read_all: Callable[[], Iterable[Device]],
        *,
        away: Callable[[], bool] = lambda: False,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self._read_all = read_all
        self._away = away
        self._keep_s = keep_s
        self._clock = clock
        self._background = background
        # Only devices with a place, as a tuple: most have none, and a model each costs ~1 KB.
        self._known: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._loaded_at: float | None = None
        self._loading = threading.Lock()

    def load(self) -> int:
        """Read every device's place (blocking); how many have one. Failures are logged."""
        try:
            known = {
                d.id: (d.location.building, d.location.floor, d.location.room)
                for d in self._read_all()
                if d.location.building or d.location.floor or d.location.room
            }
        except Exception as exc:  # noqa: BLE001 - notices go out without places meanwhile
            log.warning("device places for notices not read: %s", exc)
            return len(self._known)
        finally:
            self._loaded_at = self._clock()
        self._known = known
        return len(known)

    def __call__(self, device_id: str) -> Device | None:
        """The device with its location, or None when no place is known."""
        stale = self._loaded_at is None or self._clock() - self._loaded_at >= self._keep_s
        if stale and not self._away() and self._loading.acquire(blocking=False):
            if self._background:
                threading.Thread(target=self._reload, name="device-places", daemon=True).start()
            else:
                self._reload()
        place = self._known.get(device_id)
        if place is None:
            return None
        building, floor, room = place
        location = Location.model_construct(building=building, floor=floor, room=room)
        # Only the place is read; the other fields are not kept (memory).
        return Device.model_construct(
            id=device_id, institution="", kind=DeviceKind.SMOKE, location=location
        )

    def _reload(self) -> None:
        try:
            self.load()
        finally:
            self._loading.release()

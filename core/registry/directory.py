"""The registry in memory, for the receive path: one dict lookup per message."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from core.health import Component
from core.loops import repeat
from core.models import DeviceKind
from core.registry.models import Device
from core.registry.repository import RegistryRepository

log = logging.getLogger(__name__)
WRITE_EVERY_S = 0.5
# Auto-registrations stored per transaction, at most. A fleet arriving at once made batches of
# tens of thousands, whose SQL parameters, once freed, left 300-700 bytes per device of the
# heap in holes between long-lived objects (bench.memory_per_device); 1,000 leave about 100.
AUTO_REGISTER_BATCH = 1000
# Most devices use the default thresholds: they share one empty mapping.
_NO_THRESHOLDS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the receive path needs to know of a device (80 bytes; its values are shared)."""

    id: str
    institution: str
    kind: DeviceKind
    heartbeat_s: int
    zone: str | None = None
    thresholds: Mapping[str, float] = field(default_factory=lambda: _NO_THRESHOLDS)


class DeviceLookup(Protocol):
    """What the stages after the receive path need of the registry."""

    def lookup(self, device_id: str) -> DeviceInfo | None:
        """A known device, or None."""
        ...


class DeviceDirectory:
    """Known devices; unknown ones are added (auto-register) or refused.

    Auto-registrations take effect in memory at once and are written to the database by a
    task of the service, off the receive path; while the database is away they wait, at most
    one entry per device.
    """

    def __init__(self, repository: RegistryRepository, *, auto_register: bool) -> None:
        self._repository = repository
        self.auto_register = auto_register
        self._devices: dict[str, DeviceInfo] = {}
        # One object per distinct institution id, zone and heartbeat, shared by every device
        # that has it: a fleet has a few hundred of each, and a copy per device cost ~64 bytes.
        self._shared: dict[str | int, str | int] = {}
        # Auto-registrations not yet stored, as their DeviceInfo (kept anyway): a Device model
        # per queued device cost ~1 KB each while the writer lagged, and left the heap in holes.
        self._pending: dict[str, DeviceInfo] = {}
        self._pending_lock = threading.Lock()

    def load(self) -> int:
        """Read every device from the database; return how many."""
        self._devices = {d.id: self._info(d) for d in self._repository.devices()}
        return len(self._devices)

    def lookup(self, device_id: str) -> DeviceInfo | None:
        """A known device, or None."""
        return self._devices.get(device_id)

    def admit(self, institution: str, device_id: str, kind: DeviceKind | None) -> DeviceInfo | None:
        """The device's entry, auto-registering it if allowed; None when it is refused."""
        info = self._devices.get(device_id)
        if info is not None or not self.auto_register:
            return info
        device = Device(
            id=device_id,
            institution=institution,
            kind=kind or DeviceKind.MULTI,
            auto_registered=True,
        )
        info = self._devices[device_id] = self._info(device)
        log.info("auto-registering device %s of institution %s", device_id, institution)
        with self._pending_lock:
            self._pending[device_id] = info
        return info

    def _info(self, device: Device) -> DeviceInfo:
        shared = self._shared
        thresholds = (
            MappingProxyType(dict(device.thresholds)) if device.thresholds else _NO_THRESHOLDS
        )
        zone = device.zone and str(shared.setdefault(device.zone, device.zone))
        return DeviceInfo(
            device.id,
            str(shared.setdefault(device.institution, device.institution)),
            device.kind,
            int(shared.setdefault(device.heartbeat_s, device.heartbeat_s)),
            zone,
            thresholds,
        )

    @property
    def unwritten(self) -> int:
        """Auto-registered devices not yet in the database."""
        with self._pending_lock:
            return len(self._pending)

    def write_pending(self) -> int:
        """Store up to AUTO_REGISTER_BATCH auto-registered devices (blocking); how many.

        On failure they wait for the next round.
        """
        with self._pending_lock:
            taken = dict(itertools.islice(self._pending.items(), AUTO_REGISTER_BATCH))
            for device_id in taken:
                del self._pending[device_id]
        if not taken:
            return 0
        try:
            self._repository.add_auto_registered([_auto_registered(i) for i in taken.values()])
        except BaseException:
            with self._pending_lock:
                self._pending = taken | self._pending
            raise
        return len(taken)

    async def run_writer(self, component: Component) -> None:
        """Write auto-registrations twice a second (at once again while more wait), until
        cancelled."""
        component.backlog = lambda: self.unwritten
        await repeat(
            component,
            lambda: self.write_pending() == AUTO_REGISTER_BATCH,
            every_s=WRITE_EVERY_S,
        )


def _auto_registered(info: DeviceInfo) -> Device:
    """The registry entry of a device added on its first message."""
    return Device(id=info.id, institution=info.institution, kind=info.kind, auto_registered=True)

"""The registry in memory, for the receive path: one dict lookup per message."""

from __future__ import annotations

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
# Most devices use the default thresholds: they share one empty mapping.
_NO_THRESHOLDS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the receive path needs to know of a device."""

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
        self._pending: dict[str, Device] = {}  # registered here, not yet in the database
        self._pending_lock = threading.Lock()

    def load(self) -> int:
        """Read every device from the database; return how many."""
        self._devices = {d.id: _info(d) for d in self._repository.devices()}
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
        info = self._devices[device_id] = _info(device)
        log.info("auto-registering device %s of institution %s", device_id, institution)
        with self._pending_lock:
            self._pending[device_id] = device
        return info

    @property
    def unwritten(self) -> int:
        """Auto-registered devices not yet in the database."""
        with self._pending_lock:
            return len(self._pending)

    def write_pending(self) -> int:
        """Store the auto-registered devices (blocking); how many. On failure they wait."""
        with self._pending_lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            self._repository.add_auto_registered(batch.values())
        except BaseException:
            with self._pending_lock:
                self._pending = batch | self._pending
            raise
        return len(batch)

    async def run_writer(self, component: Component) -> None:
        """Write auto-registrations twice a second, until cancelled."""
        component.backlog = lambda: self.unwritten
        await repeat(component, self.write_pending, every_s=WRITE_EVERY_S)


def _info(device: Device) -> DeviceInfo:
    thresholds = MappingProxyType(dict(device.thresholds)) if device.thresholds else _NO_THRESHOLDS
    return DeviceInfo(
        device.id, device.institution, device.kind, device.heartbeat_s, device.zone, thresholds
    )

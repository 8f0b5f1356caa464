"""The registry in memory, for the receive path: one dict lookup per message."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from core.models import DeviceKind
from core.registry.models import Device
from core.registry.repository import RegistryRepository

log = logging.getLogger(__name__)
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
    background thread, off the receive path.
    """

    def __init__(self, repository: RegistryRepository, *, auto_register: bool) -> None:
        self._repository = repository
        self.auto_register = auto_register
        self._devices: dict[str, DeviceInfo] = {}
        self._pending: queue.SimpleQueue[Device | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

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
        self._pending.put(device)
        return info

    def start(self) -> None:
        """Start the background writer."""
        self._writer = threading.Thread(
            target=self._write_loop, name="registry-writer", daemon=True
        )
        self._writer.start()

    def stop(self) -> None:
        """Write what is pending and stop."""
        if self._writer is not None:
            self._pending.put(None)
            self._writer.join(timeout=30)
            self._writer = None

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Device] = []
            item = self._pending.get()
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._repository.add_auto_registered(batch)
                except Exception:  # the database may be down; the devices stay known in memory
                    log.exception("could not store %d auto-registered devices", len(batch))


def _info(device: Device) -> DeviceInfo:
    thresholds = MappingProxyType(dict(device.thresholds)) if device.thresholds else _NO_THRESHOLDS
    return DeviceInfo(
        device.id, device.institution, device.kind, device.heartbeat_s, device.zone, thresholds
    )

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
    background thread, off the receive path.
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
        self._pending: queue.SimpleQueue[DeviceInfo | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

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
        self._pending.put(info)
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
                    batch.append(_auto_registered(item))
                    if len(batch) >= AUTO_REGISTER_BATCH:
                        break
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._repository.add_auto_registered(batch)
                except Exception:  # the database may be down; the devices stay known in memory
                    log.exception("could not store %d auto-registered devices", len(batch))


def _auto_registered(info: DeviceInfo) -> Device:
    """The registry entry of a device added on its first message."""
    return Device(id=info.id, institution=info.institution, kind=info.kind, auto_registered=True)

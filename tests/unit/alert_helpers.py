"""A small harness for the alert engine: a fake clock, a registry in a dict, SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alerts.engine import AlertEngine, Recovered
from alerts.events import Change
from alerts.store import AlertStore
from core.alerting import Alert, AlertAction, AlertChange, AlertKind
from core.clock import FakeClock
from core.db import make_engine, upgrade
from core.models import (
    DeviceKind,
    DeviceMessage,
    Event,
    EventSource,
    EventType,
    FaultCode,
    Status,
    Telemetry,
)
from core.registry.directory import DeviceInfo
from core.settings import AlertSettings

INSTITUTION = "inst-1"


class Registry:
    """Devices by id."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceInfo] = {}

    def add(
        self,
        device: str,
        kind: DeviceKind,
        *,
        zone: str | None = "A",
        heartbeat_s: int = 60,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        self.devices[device] = DeviceInfo(
            device, INSTITUTION, kind, heartbeat_s, zone, thresholds or {}
        )

    def lookup(self, device_id: str) -> DeviceInfo | None:
        return self.devices.get(device_id)


class SyncWriter:
    """Stores each batch at once (as the projection would) and keeps every change."""

    def __init__(self, store: AlertStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.changes: list[Change] = []
        self.position = 0
        self.flushes = 0

    def submit(self, changes: list[Change], lsn: int | None) -> None:
        self.position += len(changes)
        self.store.apply(changes, self.position, lsn)
        self.changes.extend(changes)

    def flush(self) -> int:
        self.flushes += 1
        return self.position

    def actions(self, kind: AlertKind | None = None) -> list[tuple[str, AlertAction]]:
        return [
            (c.alert.kind.value, c.action)
            for _, c in self.changes
            if kind is None or c.alert.kind is kind
        ]

    def take(self) -> list[AlertChange]:
        taken = [change for _, change in self.changes]
        self.changes.clear()
        return taken


class Harness:
    """An engine on a fresh SQLite database, driven message by message."""

    def __init__(self, tmp: Path, settings: AlertSettings | None = None) -> None:
        url = f"sqlite:///{tmp / 'alerts.sqlite'}"
        upgrade(url)
        self.store = AlertStore(make_engine(url))
        self.clock = FakeClock()
        self.registry = Registry()
        self.writer = SyncWriter(self.store, self.clock)
        self.settings = settings or AlertSettings()
        self.engine = self._engine()
        self.seq = 0
        self.lsn = 0

    def _engine(self) -> AlertEngine:
        return AlertEngine(self.settings, self.registry, self.store, self.writer, self.clock)

    def restart(self) -> None:
        """A new engine on the same database (the old one's memory is gone)."""
        self.engine = self._engine()
        projected = self.store.projected(self.clock.now() - timedelta(hours=24))
        recovered = Recovered(
            projected.open_alerts, projected.checkpoint_lsn, projected.unconfirmed_clears
        )
        self.engine.load(recovered)

    def send(self, message: DeviceMessage, *, lsn: int | None = None) -> None:
        if lsn is None:
            self.lsn += 1
            lsn = self.lsn
        self.engine.observe(message, self.clock.now(), lsn)

    def _base(self, device: str, ts: datetime | None) -> dict[str, Any]:
        self.seq += 1
        return {"institution": INSTITUTION, "device": device, "ts": ts or self.clock.now()}

    def reading(self, device: str, ts: datetime | None = None, **values: Any) -> None:
        self.send(Telemetry(**self._base(device, ts), **values))

    def event(
        self,
        device: str,
        type: EventType,
        *,
        source: EventSource | None = None,
        code: FaultCode | None = None,
        ts: datetime | None = None,
    ) -> None:
        self.send(Event(**self._base(device, ts), type=type, source=source, code=code))

    def status(self, device: str, online: bool, *, retained: bool = False) -> None:
        self.send(Status(**self._base(device, None), online=online, retained=retained))

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def earlier(self, seconds: float) -> datetime:
        return self.clock.now() - timedelta(seconds=seconds)

    def open(self, kind: AlertKind, device: str | None = None) -> list[Alert]:
        return [
            a
            for a in self.engine.open_alerts()
            if a.kind is kind and (device is None or a.device == device)
        ]

    def one(self, kind: AlertKind, device: str | None = None) -> Alert:
        found = self.open(kind, device)
        assert len(found) == 1, found
        return found[0]

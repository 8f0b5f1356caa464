"""The alert stage wired together: engine, writer, outbox dispatcher, timers.

accepted messages (digester thread) → engine → writer: SQL, then stream listeners
                                        ↑          └→ outbox → dispatcher → MQTT, InfluxDB,
        timer thread: silence, escalation                                   webhooks
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from alerts.dispatch import Deliver, Dispatcher, webhook_sender
from alerts.engine import AlertEngine
from alerts.notify import InstitutionLookup, Notifier
from alerts.publisher import AlertPublisher
from alerts.store import AlertStore, OutboxItem
from alerts.writer import AlertWriter
from core.alerting import (
    Alert,
    AlertAction,
    AlertChange,
    AlertKind,
    AlertState,
    Severity,
    new_id,
)
from core.clock import Clock, SystemClock
from core.models import DeviceMessage
from core.points import Point
from core.ports import TimeSeriesSink
from core.registry.directory import DeviceLookup
from core.settings import AlertSettings

log = logging.getLogger(__name__)

TICK_S = 0.05  # silence is checked 20 times a second: offline fires < 0.1 s after its deadline
SNAPSHOT_S = 5.0
BARRIER_TIMEOUT_S = 2.0


class AlertStage:
    """Owns the engine and its threads; start() and stop(), once each."""

    def __init__(
        self,
        settings: AlertSettings,
        directory: DeviceLookup,
        database: Engine,
        data_dir: Path,
        institutions: InstitutionLookup,
        *,
        publisher: AlertPublisher | None = None,
        sink: TimeSeriesSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self.store = AlertStore(database)
        self._http = httpx.Client()
        self._targets = _targets(settings, publisher, sink, self._http)
        self._notifier = Notifier(settings, institutions)
        self.writer = AlertWriter(self.store, self._plan, self._clock)
        self.engine = AlertEngine(settings, directory, self.store, self.writer, self._clock)
        self.dispatcher = Dispatcher(self.store, self._targets, self._clock)
        self.writer.on_stored(self.dispatcher.wake)
        self._publisher = publisher
        self._snapshot = data_dir / "alerts-last-seen.bin"
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def _plan(self, subject: str, change: AlertChange) -> list[OutboxItem]:
        return [i for i in self._notifier.plan(subject, change) if i.target in self._targets]

    def start(self, seen: Iterable[tuple[str, float]] = ()) -> None:
        """Rebuild state (recovered receive times in `seen`), then start the threads."""
        self.engine.load(self._snapshot, seen)
        self._rehearse()
        self.writer.start()
        self.dispatcher.start()
        if self._publisher is not None:
            self._publisher.start()
        self._timer = threading.Thread(target=self._tick_loop, name="alert-timer", daemon=True)
        self._timer.start()

    def _rehearse(self) -> None:
        """Store an alarm and roll it back, so that the first real one finds all prepared."""
        now = self._clock.now()
        alert = Alert(
            id=new_id(),
            kind=AlertKind.SMOKE_ALARM,
            severity=Severity.CRITICAL,
            state=AlertState.ACTIVE,
            institution="rehearsal",
            device="rehearsal",
            raised_at=now,
            updated_at=now,
            last_seen_at=now,
        )
        change = AlertChange(alert=alert, action=AlertAction.RAISED, at=now)
        try:
            self.store.rehearse([("rehearsal", change)], self._plan("rehearsal", change))
        except Exception:  # only a warm-up: the real save reports what is wrong
            log.warning("alert store rehearsal failed", exc_info=True)

    def notify_ticket(self, change: dict[str, Any]) -> None:
        """Send a hazard ticket's change to the webhooks that should hear of it."""
        items = [i for i in self._notifier.plan_ticket(change) if i.target in self._targets]
        if items:
            self.store.enqueue(items, self._clock.now())
            self.dispatcher.wake()

    def observe(self, message: DeviceMessage, received_at: datetime, lsn: int) -> None:
        """One accepted message, in order (the digester's listener)."""
        self.engine.observe(message, received_at, lsn)

    def barrier(self) -> None:
        """Before the digester moves on: the changes of what it digested are stored."""
        if self.writer.pending and not self.writer.flush(BARRIER_TIMEOUT_S):
            log.error("alert changes not stored within %.0f s: the database is slow or down", 2)

    def _tick_loop(self) -> None:
        next_snapshot = time.monotonic() + SNAPSHOT_S
        while not self._stop.wait(TICK_S):
            try:
                self.engine.tick()
                if time.monotonic() >= next_snapshot:
                    self._save_snapshot()
                    next_snapshot = time.monotonic() + SNAPSHOT_S
            except Exception:  # the timer must go on: offline detection depends on it
                log.exception("alert timer failed")

    def _save_snapshot(self) -> None:
        with self.engine.locked():
            self.engine.watch.save(self._snapshot)

    def stop(self) -> None:
        """Stop the timer, store what is queued, deliver what can be, disconnect."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None
        self._save_snapshot()
        self.writer.stop()
        self.dispatcher.run_once_safely()
        self.dispatcher.stop()
        if self._publisher is not None:
            self._publisher.stop()
        self._http.close()

    def stats(self) -> dict[str, Any]:
        """Counts for logs."""
        return self.engine.stats() | {"outbox": self.store.undelivered()}


def _targets(
    settings: AlertSettings,
    publisher: AlertPublisher | None,
    sink: TimeSeriesSink | None,
    http: httpx.Client,
) -> dict[str, Deliver]:
    targets: dict[str, Deliver] = {}
    if publisher is not None:
        targets["mqtt"] = lambda row: publisher.publish(row.payload)
    if sink is not None:
        targets["influx"] = lambda row: sink.write([Point(**row.payload)])
    for hook in settings.webhooks:
        targets[f"webhook:{hook.name}"] = webhook_sender(hook, http)
    return targets

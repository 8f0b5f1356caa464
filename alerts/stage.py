"""The alert stage wired together: the engine, its journal, its clock, and what reads the log.

    accepted messages (digester thread) → engine → journal → EVENT LOG → live stream
                                            ↑                         ├→ SQL projection
            alert clock: silence, escalation                          ├→ MQTT, InfluxDB
                                                                      └→ webhooks

The engine's changes are durable in the event log before the digester hands a batch on; the
stream and the outputs read them from there. The SQL tables are a projection, kept by a
consumer: a slow, hung or absent database holds back only that consumer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from alerts.engine import AlertEngine, Recovered
from alerts.events import alert_changes
from alerts.journal import AlertJournal
from alerts.projection import AlertProjection
from alerts.store import AlertStore
from core.alerting import Alert, AlertAction, AlertChange, AlertKind
from core.clock import Clock, SystemClock
from core.health import Component
from core.models import DeviceMessage
from core.ports import EventLog
from core.registry.directory import DeviceLookup
from core.retry import Backoff
from core.settings import AlertSettings

log = logging.getLogger(__name__)

TICK_S = 0.05  # silence is checked 20 times a second: offline fires < 0.1 s after its deadline
SNAPSHOT_S = 5.0
_NUISANCE_WINDOW = timedelta(hours=24)
_REPLAY_BATCH = 5000


class AlertStage:
    """Owns the engine, its journal and its clock."""

    def __init__(
        self,
        settings: AlertSettings,
        directory: DeviceLookup,
        store: AlertStore,
        events: EventLog,
        data_dir: Path,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self.store = store
        self.events = events
        self.journal = AlertJournal(events)
        self.engine = AlertEngine(settings, directory, store, self.journal, self._clock)
        self.projection = AlertProjection(store)
        self._snapshot = data_dir / "alerts-last-seen.bin"
        self._next_snapshot = 0.0
        # Whether alert changes can be made durable: a full or failing disk stops them.
        self.journal_health = Component("event-log", backlog=lambda: self.journal.pending)
        self.stopping = threading.Event()

    def recover(self, seen: Iterable[tuple[str, float]] = ()) -> None:
        """Rebuild the engine: the SQL tables as of their position, then the log after it.

        `seen`: the last receive time of each device in the spool's tail.
        """
        now = self._clock.now()
        projected = self.store.projected(now - _NUISANCE_WINDOW)
        opened: dict[str, tuple[str, Alert]] = {}
        for subject, alert in projected.open_alerts:
            opened[alert.id] = (subject, alert)
        clears = list(projected.unconfirmed_clears)
        lsn = projected.checkpoint_lsn
        cursor = self.events.cursor(projected.position)
        replayed = 0
        try:
            while batch := cursor.next_batch(_REPLAY_BATCH):
                for event, (subject, change) in alert_changes(batch):
                    alert = change.alert
                    if alert.is_open:
                        opened[alert.id] = (subject, alert)
                    else:
                        opened.pop(alert.id, None)
                    if _unconfirmed_clear(change):
                        clears.append((alert.device, change.at))
                    lsn = max(lsn, event.raw_lsn)
                    replayed += 1
        finally:
            cursor.close()
        log.info(
            "alerts: projection at position %d, %d later changes replayed from the event log",
            projected.position,
            replayed,
        )
        recovered = Recovered(list(opened.values()), lsn, clears)
        self.engine.load(recovered, self._snapshot, seen)

    def observe(self, message: DeviceMessage, received_at: datetime, lsn: int) -> None:
        """One accepted message, in order (the digester's listener)."""
        self.engine.observe(message, received_at, lsn)

    def barrier(self) -> None:
        """Before the digester hands a batch on: the batch's alert changes are durable.

        A crash after the hand-on would otherwise lose them; while the event log cannot be
        written (disk full, I/O error), the digester waits here and nothing more is taken.
        """
        backoff = Backoff(first=0.1, most=5.0)
        while not self.flush():
            if backoff.attempts == 0:
                log.error("alarms are held until the event log can be written again")
            if self.stopping.wait(backoff.next()):
                raise OSError(self.journal_health.broken or "the event log cannot be written")
        if backoff.attempts:
            log.warning("the event log takes alert changes again")

    def flush(self) -> bool:
        """Make the engine's changes durable; False (and reported) when the log refuses."""
        try:
            self.journal.flush()
        except OSError as exc:
            self.journal_health.fault(f"the event log cannot be written: {exc}")
            return False
        self.journal_health.progress()
        return True

    async def run_journal(self, component: Component) -> None:
        """Changes to the event log as soon as the engine makes them, until cancelled."""
        component.backlog = lambda: self.journal.pending

        def flush() -> None:
            if self.flush():
                component.progress()

        await self.journal.run(flush)

    async def run_clock(self, component: Component) -> None:
        """Silence and escalation, 20 times a second, until cancelled."""
        while True:
            await asyncio.sleep(TICK_S)
            component.busy()  # a tick that does not return (a lock held for ever) shows
            try:
                await asyncio.to_thread(self.tick)
            finally:
                component.idle()
            component.progress()

    def tick(self) -> None:
        """One turn of the clock: offline alerts, escalation, the last-seen snapshot."""
        self.engine.tick()
        self.flush()  # if the log refuses, the changes wait in order for the next turn
        if time.monotonic() >= self._next_snapshot:
            self.save_snapshot()
            self._next_snapshot = time.monotonic() + SNAPSHOT_S

    def save_snapshot(self) -> None:
        """The last receive time of every device, for offline detection after a restart."""
        with self.engine.locked():  # the digester waits only for the copy, not the writing
            entries = self.engine.watch.copy()
        self.engine.watch.save(self._snapshot, entries)

    def stop(self) -> None:
        """Make every change durable and keep the snapshot (at shutdown)."""
        self.stopping.set()
        self.save_snapshot()
        if not self.flush():
            log.critical("%d alert changes could not be logged", self.journal.pending)


def _unconfirmed_clear(change: AlertChange) -> bool:
    """A smoke alarm that cleared without another detector confirming it (nuisance count)."""
    alert = change.alert
    return (
        change.action is AlertAction.CLEARED
        and alert.kind is AlertKind.SMOKE_ALARM
        and not alert.confirmed
    )

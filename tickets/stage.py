"""The ledger's stage: a worker thread for alert changes and the clock.

Alert changes arrive on the alert writer's thread; they are queued here so that the ledger's
database work never delays the next alarm on its way to the duty officer.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from core.alerting import Alert, AlertChange
from core.clock import Clock, SystemClock
from tickets.attachments import AttachmentStore
from tickets.ledger import AlertStateLookup, InstitutionLookup, Ledger
from tickets.policy import Policy
from tickets.store import TicketStore

log = logging.getLogger(__name__)

TICK_S = 5.0  # delayed openings and escalation are minutes and hours: seconds are enough


class TicketStage:
    """Owns the ledger and its thread; start() and stop(), once each."""

    def __init__(
        self,
        policy: Policy,
        database: Engine,
        institutions: InstitutionLookup,
        *,
        alert_state: AlertStateLookup | None = None,
        clock: Clock | None = None,
        attachments: AttachmentStore | None = None,
        open_alerts: Callable[[], Iterable[Alert]] | None = None,
    ) -> None:
        """`open_alerts`: the alerts on the board now, for catching up after a miss."""
        self.store = TicketStore(database)
        self.attachments = attachments  # None: evidence by link only
        self.ledger = Ledger(
            self.store,
            policy,
            institutions,
            clock or SystemClock(),
            alert_state=alert_state,
        )
        self._open_alerts = open_alerts
        self._queue: queue.Queue[AlertChange | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        # Catch up at the start (changes queued in memory die with a process) and after a
        # change could not be handled, until that succeeds.
        self._behind = open_alerts is not None

    def submit(self, change: AlertChange) -> None:
        """An alert change, stored (the alert writer's listener); never blocks."""
        self._queue.put(change)

    def start(self) -> None:
        """Start the worker."""
        self._thread = threading.Thread(target=self._loop, name="ledger", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Handle what is queued, then stop."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    @property
    def pending(self) -> int:
        """Alert changes not yet handled."""
        return self._queue.qsize()

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                pass  # time for the clock
            else:
                if item is None:
                    return
                work = functools.partial(self.ledger.on_alert, item)
                if not self._safely(work, item.alert.id) and self._open_alerts is not None:
                    self._behind = True
            if time.monotonic() >= next_tick:  # also while alert changes keep coming
                if self._behind:
                    self._behind = not self._safely(self._catch_up, "catching up")
                self._safely(self.ledger.tick, "the clock")
                next_tick = time.monotonic() + TICK_S

    def _catch_up(self) -> None:
        if self._open_alerts is not None:
            self.ledger.reconcile(self._open_alerts())

    @staticmethod
    def _safely(work: Callable[[], object], what: str) -> bool:
        try:
            work()
        except OperationalError as exc:  # the database is away: one line, not a traceback
            log.error("ledger could not reach the database on %s: %s", what, exc.orig or exc)
            return False
        except Exception:  # the ledger must go on; the failure is logged with its cause
            log.exception("ledger failed on %s", what)
            return False
        return True

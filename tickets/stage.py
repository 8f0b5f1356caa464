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
from collections.abc import Callable

from sqlalchemy import Engine

from core.alerting import AlertChange
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
    ) -> None:
        self.store = TicketStore(database)
        self.attachments = attachments  # None: evidence by link only
        self.ledger = Ledger(
            self.store,
            policy,
            institutions,
            clock or SystemClock(),
            alert_state=alert_state,
        )
        self._queue: queue.Queue[AlertChange | None] = queue.Queue()
        self._thread: threading.Thread | None = None

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
                self._safely(functools.partial(self.ledger.on_alert, item), item.alert.id)
            if time.monotonic() >= next_tick:  # also while alert changes keep coming
                self._safely(self.ledger.tick, "the clock")
                next_tick = time.monotonic() + TICK_S

    @staticmethod
    def _safely(work: Callable[[], None], what: str) -> None:
        try:
            work()
        except Exception:  # the ledger must go on; the failure is logged with its cause
            log.exception("ledger failed on %s", what)

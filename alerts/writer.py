"""Stores the engine's changes in order, then tells the listeners (stream, tickets)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from alerts.engine import Change
from alerts.store import AlertStore, OutboxItem
from core.alerting import AlertChange
from core.clock import Clock, SystemClock

log = logging.getLogger(__name__)

ChangeListener = Callable[[AlertChange], None]
Planner = Callable[[str, AlertChange], list[OutboxItem]]


class AlertWriter:
    """A thread that writes batches of changes, each in one transaction with its outbox rows.

    If the database is down the changes are still shown (listeners are told once, at once,
    also of the changes that come while it is down), and the write is retried until it
    succeeds, with whatever came meanwhile: the engine's callers wait for it where it matters.
    """

    def __init__(
        self, store: AlertStore, plan: Planner | None = None, clock: Clock | None = None
    ) -> None:
        self._store = store
        self._plan = plan or (lambda _subject, _change: [])
        self._clock = clock or SystemClock()
        self._listeners: list[ChangeListener] = []
        self._stored_listeners: list[Callable[[], None]] = []
        self._cond = threading.Condition()
        self._queue: list[tuple[int, list[Change], int | None]] = []
        self._submitted = 0
        self._stored = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def add_listener(self, listener: ChangeListener) -> None:
        """Be told of every change, in order, once it is stored (or the store is down)."""
        self._listeners.append(listener)

    def on_stored(self, callback: Callable[[], None]) -> None:
        """Be called after each stored batch (the dispatcher wakes up)."""
        self._stored_listeners.append(callback)

    def submit(self, changes: list[Change], lsn: int | None) -> int:
        """Queue changes; return a ticket for `wait`."""
        with self._cond:
            self._submitted += 1
            self._queue.append((self._submitted, changes, lsn))
            self._cond.notify_all()
            return self._submitted

    def wait(self, ticket: int, timeout: float) -> bool:
        """Block until the changes of `ticket` are stored."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stored >= ticket, timeout)

    def flush(self, timeout: float) -> bool:
        """Block until everything submitted so far is stored."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._stored >= target, timeout)

    @property
    def pending(self) -> int:
        """Submitted batches not stored yet."""
        with self._cond:
            return self._submitted - self._stored

    def start(self) -> None:
        """Start the writing thread."""
        self._thread = threading.Thread(target=self._loop, name="alert-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Write what is queued (for up to `timeout`) and stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("alert writer: %d batches not stored at shutdown", self.pending)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            self._write(batch)

    def _write(self, batch: list[tuple[int, list[Change], int | None]]) -> None:
        changes = [change for _, items, _ in batch for change in items]
        lsns = [lsn for _, _, lsn in batch if lsn is not None]
        told = 0  # how many of `changes` the listeners have seen
        backoff = 0.2
        give_up_at = time.monotonic() + 10  # only when stopping
        while True:
            now = self._clock.now()
            try:
                self._store.save(
                    changes, max(lsns) if lsns else None, self._deliveries(changes), now
                )
                break
            except SQLAlchemyError as exc:  # the database is down: show the alarms, keep trying
                log.error("cannot store %d alert changes: %s; retrying", len(changes), exc)
                self._tell(changes[told:])
                told = len(changes)
                if self._stopping and time.monotonic() > give_up_at:
                    log.critical("%d alert changes were not stored", len(changes))
                    break
                # Until the next try, changes that come meanwhile join this batch and are
                # shown at once: one stuck transaction must not hold back the next alarms.
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2, 5.0)
                while (left := retry_at - time.monotonic()) > 0:
                    with self._cond:
                        if not self._queue:
                            self._cond.wait(left)
                        more, self._queue = self._queue, []
                    if more:
                        batch.extend(more)
                        changes.extend(change for _, items, _ in more for change in items)
                        lsns.extend(lsn for _, _, lsn in more if lsn is not None)
                        self._tell(changes[told:])
                        told = len(changes)
        self._tell(changes[told:])
        with self._cond:
            self._stored = batch[-1][0]
            self._cond.notify_all()
        for callback in self._stored_listeners:
            callback()

    def _deliveries(self, changes: list[Change]) -> list[OutboxItem]:
        items: list[OutboxItem] = []
        for subject, change in changes:
            items.extend(self._plan(subject, change))
        return items

    def _tell(self, changes: list[Change]) -> None:
        for _, change in changes:
            for listener in self._listeners:
                try:
                    listener(change)
                except Exception:  # one failing listener must not starve the others
                    log.exception("alert listener %r failed on %s", listener, change.alert.id)


def utc(moment: datetime) -> str:
    """ISO 8601 with Z, the form every output uses."""
    return moment.isoformat().replace("+00:00", "Z")

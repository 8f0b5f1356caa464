"""Puts the engine's changes on the event log, in the order the engine made them.

The engine hands over changes under its lock (`submit`); whoever needs them durable calls
`flush`: the digester after each batch (before the batch's records are handed on, so that a
crash cannot skip their alarms), the alert clock after each tick, a person's acknowledgement
before it answers. One flush appends everything submitted so far with one fdatasync; the
live stream and the notifiers read it from the log at once. Nothing here touches SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from alerts.events import Change, to_event
from core.eventlog import NewEvent
from core.ports import EventLog

log = logging.getLogger(__name__)


class AlertJournal:
    """The engine's change sink: a buffer in front of the event log."""

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._buffer: list[NewEvent] = []
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # flushes append one after another, in order
        self._waiting: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.flushed = 0  # events appended since start

    def submit(self, changes: list[Change], lsn: int | None) -> None:
        """Take changes (in the engine's order; `lsn`: the message that caused them)."""
        events = [to_event(subject, change, lsn or 0) for subject, change in changes]
        with self._buffer_lock:
            self._buffer.extend(events)
        waiting = self._waiting
        if waiting is not None:
            loop, woken = waiting
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
                loop.call_soon_threadsafe(woken.set)

    async def run(self, flush: Callable[[], object]) -> None:
        """Flush (with `flush`, which reports) as soon as changes come, until cancelled."""
        woken = asyncio.Event()
        self._waiting = (asyncio.get_running_loop(), woken)
        try:
            while True:
                await woken.wait()
                woken.clear()
                await asyncio.to_thread(flush)
        finally:
            self._waiting = None

    @property
    def pending(self) -> int:
        """Changes submitted and not yet durable."""
        with self._buffer_lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Make every change submitted so far durable; the log's head. Raises OSError.

        On failure the changes stay, in order, for the next flush.
        """
        with self._flush_lock:
            with self._buffer_lock:
                taken, self._buffer = self._buffer, []
            if not taken:
                return self._events.head
            try:
                head = self._events.append(taken)
            except BaseException:
                with self._buffer_lock:
                    self._buffer[:0] = taken
                raise
            self.flushed += len(taken)
            return head

"""Moves ticket changes from the SQL outbox to the event log, in the order they were made.

A change is written to `ticket_outbox` in its own transaction (tickets/store.py); the relay
appends the waiting rows to the log and deletes them. Woken after every change in this
process, and every second for those of another process on the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from sqlalchemy import Engine, RowMapping, delete, select

from core.eventlog import TICKET, NewEvent
from core.health import Component
from core.ports import EventLog
from tickets.tables import ticket_outbox

log = logging.getLogger(__name__)

BATCH = 500
POLL_S = 1.0


class TicketRelay:
    """The outbox's way to the log."""

    def __init__(self, engine: Engine, events: EventLog) -> None:
        self._engine = engine
        self._events = events
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.relayed = 0

    def wake(self) -> None:
        """A change was committed (any thread): relay soon."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
                loop.call_soon_threadsafe(wake.set)

    def relay(self, limit: int = BATCH) -> int:
        """Move up to `limit` waiting changes to the log; how many it moved.

        The rows are locked while they are appended (PostgreSQL: another process skips them),
        then deleted. A crash after the append and before the commit appends them again.
        """
        query = select(ticket_outbox).order_by(ticket_outbox.c.id).limit(limit)
        with self._engine.begin() as connection:
            rows = connection.execute(query.with_for_update(skip_locked=True)).mappings().all()
            if not rows:
                return 0
            self._events.append([_event(row) for row in rows])
            connection.execute(
                delete(ticket_outbox).where(ticket_outbox.c.id.in_([row["id"] for row in rows]))
            )
        self.relayed += len(rows)
        return len(rows)

    async def run(self, component: Component) -> None:
        """Relay until cancelled."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while True:
            self._wake.clear()
            component.busy()
            try:
                moved = await asyncio.to_thread(self.relay)
            finally:
                component.idle()
            component.progress()
            if moved < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)


def _event(row: RowMapping) -> NewEvent:
    return NewEvent(TICKET, row["ticket_id"], row["institution"], orjson.dumps(row["body"]))

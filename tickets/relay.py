"""Moves ticket changes from the SQL outbox to the event log, in the order they were made.

A change is written to `ticket_outbox` in its own transaction (tickets/store.py); the relay
appends the waiting rows to the log and deletes them. Woken after every change in this
process, and every second for those of another process on the same database.

A crash between the append and the delete would append them again: at start (`recover`),
and after a round that failed (the delete or the commit refused), rows whose event is in the
log already are deleted instead, so each change is in the log once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from sqlalchemy import Engine, RowMapping, delete, select

from core.eventlog import TICKET, NewEvent
from core.health import Component
from core.loops import repeat
from core.ports import EventLog
from tickets.tables import ticket_outbox

log = logging.getLogger(__name__)

BATCH = 500
POLL_S = 1.0
# The newest events searched at start for changes appended before a crash (one batch of the
# relay, and whatever the alert engine appended after it before the crash).
RECOVER_SCAN = 200_000


class TicketRelay:
    """The outbox's way to the log."""

    def __init__(self, engine: Engine, events: EventLog) -> None:
        self._engine = engine
        self._events = events
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.relayed = 0
        self._unsure = False  # a round failed: its rows may be in the log already

    def wake(self) -> None:
        """A change was committed (any thread): relay soon."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
                loop.call_soon_threadsafe(wake.set)

    def recover(self, scan: int = RECOVER_SCAN) -> int:
        """Delete waiting rows that a crash left after appending them; how many."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(ticket_outbox.c.id, ticket_outbox.c.body)).all()
        waiting = {row[1]["event_id"]: row[0] for row in rows}
        if not waiting:
            return 0
        logged: list[int] = []
        cursor = self._events.cursor(max(0, self._events.head - scan))
        try:
            while batch := cursor.next_batch(5000):
                for event in batch:
                    if event.kind == TICKET:
                        event_id = orjson.loads(event.data).get("event_id")
                        if event_id in waiting:
                            logged.append(waiting[event_id])
        finally:
            cursor.close()
        if logged:
            with self._engine.begin() as connection:
                connection.execute(delete(ticket_outbox).where(ticket_outbox.c.id.in_(logged)))
            log.warning("ticket relay: %d changes were in the event log already", len(logged))
        return len(logged)

    def relay(self, limit: int = BATCH) -> int:
        """Move up to `limit` waiting changes to the log; how many it moved.

        The rows are locked while they are appended (PostgreSQL: another process skips them),
        then deleted. A crash after the append and before the commit appends them again.
        """
        if self._unsure:  # the last round failed after its append, perhaps: settle it first
            self.recover()
            self._unsure = False
        query = select(ticket_outbox).order_by(ticket_outbox.c.id).limit(limit)
        self._unsure = True
        with self._engine.begin() as connection:
            rows = connection.execute(query.with_for_update(skip_locked=True)).mappings().all()
            if not rows:
                self._unsure = False
                return 0
            self._events.append([_event(row) for row in rows])
            connection.execute(
                delete(ticket_outbox).where(ticket_outbox.c.id.in_([row["id"] for row in rows]))
            )
        self._unsure = False
        self.relayed += len(rows)
        return len(rows)

    async def run(self, component: Component) -> None:
        """Relay until cancelled."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        await repeat(component, lambda: self.relay() == BATCH, every_s=POLL_S, wake=self._wake)


def _event(row: RowMapping) -> NewEvent:
    return NewEvent(TICKET, row["ticket_id"], row["institution"], orjson.dumps(row["body"]))

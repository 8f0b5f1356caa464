"""The live stream: alert and ticket changes as Server-Sent Events (contract section 5).

Each event's id is its position in the event log. A client that comes back with
`Last-Event-ID` gets every event after it, exactly once, however long it was away — as long
as the log still holds it (the retention, docs/configuration.md); if not, it first gets a
`reset` event: reload the board, then follow.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, HTTPException, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import ContextDep, CurrentUser, scope
from core.eventlog import LogEvent
from core.ports import EventCursor, EventLog

router = APIRouter(prefix="/api/v1", tags=["stream"])

RETRY_MS = 2000  # browsers reconnect after this, sending Last-Event-ID to resume
BATCH = 200
KEEPALIVE_S = 15.0  # a comment now and then: proxies and browsers keep the connection open
WAIT_S = 1.0  # how often a quiet stream looks whether the service is shutting down
_POSITION = re.compile(r"[0-9]{1,19}")  # ASCII digits, a 64-bit position at most


@router.get("/stream", response_class=EventSourceResponse)
async def stream(
    context: ContextDep,
    user: CurrentUser,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Events `alert` ({action, at, actor, note, alert}) and `ticket` ({action, at, actor,
    note, ticket, alert_id, …}); the id of each is its position in the event log."""
    events = context.events
    if events is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the event log is not open")
    visible = await asyncio.to_thread(scope, context, user)
    mine = None if visible is None else frozenset(visible)
    start, reset = _start(events, last_event_id)
    cursor = events.cursor(start)
    try:
        yield ServerSentEvent(comment="hazardwatch stream", retry=RETRY_MS)
        if reset is not None:
            yield reset
        quiet = 0.0
        while not context.closing.is_set():
            batch = await _next(cursor)
            if not batch:
                if not await events.wait_async(cursor.position, WAIT_S):
                    quiet += WAIT_S
                    if quiet >= KEEPALIVE_S:
                        quiet = 0.0
                        yield ServerSentEvent(comment="keep-alive")
                continue
            quiet = 0.0
            if cursor.gap is not None:  # pruned while this client read its backlog
                first, last = cursor.gap
                cursor.gap = None
                body = {"first": last + 1, "head": events.head, "last_event_id": first - 1}
                yield ServerSentEvent(raw_data=orjson.dumps(body).decode(), event="reset")
            for event in batch:
                if mine is None or event.institution in mine:
                    yield ServerSentEvent(
                        raw_data=event.data.decode(), event=event.kind, id=str(event.position)
                    )
    finally:
        cursor.close()


def _start(events: EventLog, last_event_id: str | None) -> tuple[int, ServerSentEvent | None]:
    """Where to begin: after the client's last event, or now; a reset if that is gone."""
    head = events.head
    if not last_event_id or not _POSITION.fullmatch(last_event_id):
        return head, None
    last = int(last_event_id)
    if last > head or last + 1 < events.first:
        # Pruned, or a log that was replaced: what the client missed cannot be replayed.
        body = {"first": events.first, "head": head, "last_event_id": last}
        return head, ServerSentEvent(raw_data=orjson.dumps(body).decode(), event="reset")
    return last, None


async def _next(cursor: EventCursor) -> list[LogEvent]:
    if cursor.from_memory():
        return cursor.next_batch(BATCH)
    return await asyncio.to_thread(cursor.next_batch, BATCH)

"""The live stream: alert and ticket changes as Server-Sent Events (contract section 5).

Each event's id is its position in the event log. A client that comes back with
`Last-Event-ID` gets every event after it, exactly once, however long it was away — as long
as the log still holds it (the retention, docs/configuration.md); if not, it first gets a
`reset` event: reload the board, then follow.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import ContextDep, CurrentCaller, CurrentUser, scope, still_valid
from core.eventlog import LogEvent
from core.ports import EventCursor, EventLog

router = APIRouter(prefix="/api/v1", tags=["stream"])

RETRY_MS = 2000  # browsers reconnect after this, sending Last-Event-ID to resume
BATCH = 200
KEEPALIVE_S = 15.0  # a comment now and then: proxies and browsers keep the connection open
WAIT_S = 1.0  # how often a quiet stream looks whether the service is shutting down
RECHECK_S = 5.0  # how often a stream checks that its token or session still holds
_POSITION = re.compile(r"[0-9]{1,19}")  # ASCII digits, a 64-bit position at most


def _may_open(context: ContextDep, user: CurrentUser) -> EventLog:
    """Refusals before the stream starts (a stream answers 200 at once, then streams)."""
    if context.events is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the event log is not open")
    refusal = context.streams.refusal(user.name)
    if refusal is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, refusal, headers={"Retry-After": "10"}
        )
    return context.events


@router.get("/stream", response_class=EventSourceResponse)
async def stream(
    context: ContextDep,
    user: CurrentUser,
    events: Annotated[EventLog, Depends(_may_open)],
    caller: CurrentCaller,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        str | None,
        Query(
            alias="last_event_id",
            max_length=19,
            description="where to begin when no Last-Event-ID header is sent (a browser's "
            "first EventSource cannot send one): the X-Event-Position of GET /api/v1/alerts",
        ),
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Events `alert` ({action, at, actor, note, alert}) and `ticket` ({action, at, actor,
    note, ticket, alert_id, …}); the id of each is its position in the event log. A stream
    ends within seconds of its user being revoked, its token expiring or its session ending
    (an open stream keeps its session from the idle timeout, unless `[auth]
    stream_keeps_session` is false); each user may have a few open at once (`[stream]`
    settings; more: 429). A browser's EventSource sends the session cookie."""
    visible = await asyncio.to_thread(scope, context, user)
    mine = None if visible is None else frozenset(visible)
    start, reset = _start(events, last_event_id or after)
    cursor = events.cursor(start)
    context.streams.take(user.name)
    keep = context.accounts is not None and context.accounts.settings.stream_keeps_session
    try:
        yield ServerSentEvent(comment="hazardwatch stream", retry=RETRY_MS)
        if reset is not None:
            yield reset
        quiet = 0.0
        check_at = time.monotonic() + RECHECK_S
        while not context.closing.is_set():
            if time.monotonic() >= check_at:
                check_at = time.monotonic() + RECHECK_S
                if not await asyncio.to_thread(still_valid, context, caller, touch=keep):
                    ended = "token was revoked" if caller.token else "session has ended"
                    yield ServerSentEvent(comment=f"the {ended}")
                    return
                # The institutions seen, anew: the registry may have moved one out of a town.
                visible = await asyncio.to_thread(scope, context, user)
                mine = None if visible is None else frozenset(visible)
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
        context.streams.give_back(user.name)
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

"""The live stream: alert and ticket changes as Server-Sent Events (contract section 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import ContextDep, CurrentUser, scope

router = APIRouter(prefix="/api/v1", tags=["stream"])

RETRY_MS = 2000  # browsers reconnect after this, sending Last-Event-ID to replay the gap


@router.get("/stream", response_class=EventSourceResponse)
async def stream(
    context: ContextDep,
    user: CurrentUser,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Events `alert` (and `ticket`): {action, at, actor, note, alert}; ids count up."""
    last = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    visible = scope(context, user)
    mine = None if visible is None else frozenset(visible)
    subscription = context.broadcaster.subscribe(last)
    try:
        yield ServerSentEvent(comment="hazardwatch stream", retry=RETRY_MS)
        while True:
            item = await subscription.queue.get()
            if item is None:  # this client fell too far behind: it reconnects and replays
                return
            if mine is not None and item.institution not in mine:
                continue  # another institution's: this user does not see it
            yield ServerSentEvent(raw_data=item.data.decode(), event=item.event, id=str(item.id))
    finally:
        subscription.close()

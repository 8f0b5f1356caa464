"""Dead letters: rejected messages with their reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ContextDep, CurrentUser, require
from api.schemas import ID_MAX, DeadLetterPage, DeadLetterPublic

router = APIRouter(prefix="/api/v1/dead-letters", tags=["dead letters"])


@router.get("")
def list_dead_letters(
    context: ContextDep,
    user: CurrentUser,
    reason: str | None = None,
    device: str | None = None,
    institution: str | None = None,
    before_id: Annotated[int | None, Query(ge=0, le=ID_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterPage:
    """Newest first; filter by reason, device or institution; page with before_id."""
    # Raw payloads of every institution, and of senders no institution owns: the centre's.
    require(user.sees_all, "dead letters are for the monitoring centre")
    rows = context.dead_letters.list(
        reason=reason, device=device, institution=institution, before_id=before_id, limit=limit
    )
    items = [
        DeadLetterPublic(
            id=key,
            received_at=datetime.fromtimestamp(letter.received_ms / 1000, UTC),
            topic=letter.topic,
            reason=letter.reason,
            detail=letter.detail,
            institution=letter.institution,
            device=letter.device,
            size=letter.size,
            payload=letter.payload.decode("utf-8", "replace"),
        )
        for key, letter in rows
    ]
    next_before = items[-1].id if len(items) == limit else None
    return DeadLetterPage(
        items=items, next_before_id=next_before, counts=context.dead_letters.counts()
    )

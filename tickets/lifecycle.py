"""The closed loop (闭环管理): which step may follow which, and who may take it.

    open ──assign──▶ assigned ──start──▶ rectifying ──rectified──▶ awaiting_verification
      ▲                                      ▲                          │       │
      │                                      └──────── reject ──────────┘    verify
      └─────────────────────────── reopen ─────────── closed ◀──────────────────┘

Any other step is refused with `InvalidTransitionError`. The verifier must not be the one who
reported the rectification (谁检查、谁签名、谁负责). Pure functions: the store keeps the result.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.alerting import SYSTEM
from core.errors import InvalidTransitionError
from tickets.models import (
    Evidence,
    Ticket,
    TicketAction,
    TicketChange,
    TicketEvent,
    TicketStatus,
)

S = TicketStatus
A = TicketAction

# (status before, step) -> status after. Contract section 3, exactly.
TRANSITIONS: dict[tuple[TicketStatus, TicketAction], TicketStatus] = {
    (S.OPEN, A.ASSIGNED): S.ASSIGNED,
    (S.ASSIGNED, A.ASSIGNED): S.ASSIGNED,  # handed on to another unit or person
    (S.ASSIGNED, A.STARTED): S.RECTIFYING,
    (S.RECTIFYING, A.RECTIFIED): S.AWAITING_VERIFICATION,
    (S.AWAITING_VERIFICATION, A.VERIFIED): S.CLOSED,
    (S.AWAITING_VERIFICATION, A.REJECTED): S.RECTIFYING,
    (S.CLOSED, A.REOPENED): S.OPEN,
}
# Steps that record without changing the status; allowed while the ticket is open.
NOTES = frozenset({A.COMMENTED, A.CLEARED, A.ATTACHED, A.ESCALATED})


def step(
    ticket: Ticket,
    action: TicketAction,
    actor: str,
    at: datetime,
    *,
    note: str | None = None,
    evidence: list[Evidence] | None = None,
    alert_id: str | None = None,
    **changes: Any,
) -> TicketChange:
    """The ticket after `action` by `actor`, and its audit line; or InvalidTransitionError.

    `changes` are field updates the step carries (a new responsible person when assigning,
    the measures when rectified, an escalation level).
    """
    if action in NOTES:
        if not ticket.is_open and action is not A.COMMENTED:
            raise InvalidTransitionError(f"ticket {ticket.id} is closed: cannot be {action}")
        after = ticket.status
    else:
        after_or_none = TRANSITIONS.get((ticket.status, action))
        if after_or_none is None:
            allowed = sorted(a.value for (s, a) in TRANSITIONS if s is ticket.status)
            raise InvalidTransitionError(
                f"ticket {ticket.id} is {ticket.status}: cannot be {action} "
                f"(allowed: {', '.join(allowed) or 'nothing'})"
            )
        after = after_or_none
    update: dict[str, Any] = {"status": after, "updated_at": at, **changes}
    if action is A.RECTIFIED:
        update["rectified_by"] = actor
    elif action is A.VERIFIED:
        if actor == ticket.rectified_by and actor != SYSTEM:
            raise InvalidTransitionError(
                f"ticket {ticket.id}: {actor} reported the rectification and cannot also verify "
                "it (谁检查、谁签名、谁负责)"
            )
        update |= {"verified_by": actor, "closed_at": at}
    elif action is A.REJECTED:
        if actor == ticket.rectified_by:
            raise InvalidTransitionError(
                f"ticket {ticket.id}: {actor} reported the rectification and cannot verify it"
            )
    elif action is A.REOPENED:
        update |= {"closed_at": None, "verified_by": None, "rectified_by": None}
    event = TicketEvent(
        at=at,
        action=action,
        actor=actor,
        note=note,
        status=after,
        evidence=evidence or [],
        alert_id=alert_id,
    )
    return TicketChange(ticket=ticket.model_copy(update=update), event=event)

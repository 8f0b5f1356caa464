"""Ticket changes as events of the log (core/eventlog.py).

The body is what the live stream sends: `{action, at, actor, note, ticket, alert_id,
event_id, notify}` — the ticket after the change, the alert the step was about (a sensor
ticket opened or attached: the alert's link to its ticket), the audit line's id, and whether
people should hear of it through the webhooks.
"""

from __future__ import annotations

from typing import Any

from core.clock import iso_utc
from tickets.models import TicketAction, TicketChange

# Ticket changes people are told of through the webhooks.
NOTIFY = frozenset(
    {
        TicketAction.OPENED,
        TicketAction.ESCALATED,
        TicketAction.RECTIFIED,
        TicketAction.VERIFIED,
        TicketAction.REJECTED,
        TicketAction.REOPENED,
    }
)


def ticket_body(change: TicketChange, event_id: int) -> dict[str, Any]:
    """The body of a `ticket` event."""
    event = change.event
    return {
        "action": event.action.value,
        "at": iso_utc(event.at),
        "actor": event.actor,
        "note": event.note,
        "ticket": change.ticket.model_dump(mode="json"),
        "alert_id": event.alert_id,
        "event_id": event_id,
        "notify": event.action in NOTIFY,
    }

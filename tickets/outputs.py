"""Ticket changes as InfluxDB points, for the wall's ledger panels."""

from __future__ import annotations

from collections.abc import Sequence

from core.clock import to_epoch_ms
from core.consumers import Checkpointed
from core.eventlog import TICKET, FileCheckpoints, LogEvent
from core.points import FieldValue, Point, SeriesStamper
from core.ports import EventLog, TimeSeriesSink
from tickets.models import Ticket, TicketAction


def ticket_point(action: str, ticket: Ticket) -> Point:
    """A `ticket` point: tags institution, category, source; the change and the ticket's state."""
    tags = {
        "institution": ticket.institution,
        "category": ticket.category,
        "source": ticket.source.value,
    }
    fields: dict[str, FieldValue] = {
        "ticket_id": ticket.id,
        "action": TicketAction(action).value,
        "status": ticket.status.value,
        "severity": ticket.severity.value,
        "major_hazard": ticket.major_hazard,
        "escalation_level": ticket.escalation_level,
        "overdue": ticket.is_open and ticket.updated_at > ticket.due_at,
    }
    return Point("ticket", tags, fields, to_epoch_ms(ticket.updated_at))


class TicketPoints(Checkpointed):
    """Writes a point for every ticket change, a batch a request."""

    name = "influx-tickets"

    def __init__(self, sink: TimeSeriesSink, events: EventLog, checkpoints: FileCheckpoints):
        super().__init__(events, checkpoints)
        self._sink = sink
        self._stamper = SeriesStamper()

    def handle(self, events: Sequence[LogEvent]) -> None:
        """Write the batch's points; the same point written twice is one point."""
        points = []
        for event in events:
            if event.kind == TICKET:
                body = event.body()
                ticket = Ticket.model_validate(body["ticket"])
                points.append(ticket_point(body["action"], ticket))
        if points:
            self._stamper.batch(points, self._sink.write)
        self._save(events[-1].position)

"""The ledger in the SQL database: tickets, the alerts behind them, the audit trail, triggers.

Every change writes its event for the event log into `ticket_outbox` in the same transaction;
the relay (tickets/relay.py) moves it to the log, so no change is lost between the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Text,
    and_,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from core.errors import NotFoundError
from tickets.events import ticket_body
from tickets.models import Ticket, TicketChange, TicketEvent, TicketStatus
from tickets.tables import (
    ticket_alerts,
    ticket_events,
    ticket_outbox,
    ticket_triggers,
    tickets,
)

# "Not closed" spelled as the open statuses: an index on (status, due_at) serves IN, not !=.
OPEN_STATUSES = [s.value for s in TicketStatus if s is not TicketStatus.CLOSED]
_COLUMNS = [c.name for c in tickets.columns if c.name != "open_key"]


def open_key(ticket: Ticket) -> str | None:
    """What keeps one open ticket per (device, category); None for tickets without a device."""
    if ticket.device is None or not ticket.is_open:
        return None
    return f"{ticket.device}|{ticket.category}"


class DuplicateTicketError(Exception):
    """Another writer opened the ticket of this device and category first."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """An alert waiting for its delay: a ticket opens at `due_at` if it is still open."""

    alert_id: str
    due_at: datetime
    alert: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TicketQuery:
    """Filters of a ledger search; every one optional."""

    statuses: Sequence[str] = ()
    institutions: Sequence[str] | None = None  # None: all; []: none
    sources: Sequence[str] = ()
    category: str | None = None
    device: str | None = None
    found_from: datetime | None = None
    found_before: datetime | None = None
    overdue_at: datetime | None = None  # open and past the deadline at this time


def _row(ticket: Ticket) -> dict[str, Any]:
    values = ticket.model_dump(exclude={"alert_ids"})
    values["open_key"] = open_key(ticket)
    return values


def _ticket(row: RowMapping, alert_ids: list[str]) -> Ticket:
    return Ticket.model_validate({name: row[name] for name in _COLUMNS} | {"alert_ids": alert_ids})


def _event_row(ticket_id: str, event: TicketEvent) -> dict[str, Any]:
    values = event.model_dump(mode="json", include={"evidence"})
    return {
        "ticket_id": ticket_id,
        "at": event.at,
        "action": event.action.value,
        "actor": event.actor,
        "note": event.note,
        "status": event.status.value,
        "evidence": values["evidence"],
        "alert_id": event.alert_id,
    }


# Audit lines with evidence: most have none, stored as the JSON text "[]" (SQLite and PostgreSQL).
_HAS_EVIDENCE = cast(ticket_events.c.evidence, Text) != "[]"


def _stored_files(rows: Sequence[Any]) -> Iterator[tuple[str, int]]:
    """(sha256, size) of each stored file in lists of evidence; links have no sha256."""
    for evidence in rows:
        for item in evidence or ():
            sha256 = item.get("sha256")
            if sha256 and item.get("path"):
                yield sha256, int(item.get("size") or 0)


class TicketStore:
    """All SQL of the ledger. Every write is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Called after each committed change (the relay wakes up); must not block.
        self.after_commit: Callable[[], None] = lambda: None

    # ------------------------------------------------------------------ writes

    def create(self, change: TicketChange) -> None:
        """Store a new ticket, its first audit line and its alerts.

        Raises DuplicateTicketError when an open ticket of the device and category exists, or
        one of the alerts is attached already (another process was first).
        """
        ticket = change.ticket
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(tickets).values(_row(ticket)))
                self._attach(connection, ticket.id, ticket.alert_ids, change.event.at)
                self._record(connection, change)
        except IntegrityError as exc:
            raise DuplicateTicketError(str(exc.orig)) from None
        self.after_commit()

    def change(
        self,
        ticket_id: str,
        make: Callable[[Ticket], TicketChange | None],
        new_alert: str | None = None,
    ) -> TicketChange | None:
        """Read a ticket under a row lock, take a step on it, store the step: one transaction.

        Two processes changing one ticket at once thus take turns (PostgreSQL: SELECT … FOR
        UPDATE; SQLite has one writer at a time anyway). `make` may return None (nothing to
        do) or raise (a refused step: nothing is stored). With `new_alert`, the alert is
        attached too; None when it is attached already. NotFoundError for an unknown ticket.
        """
        try:
            with self.engine.begin() as connection:
                found = (
                    connection.execute(
                        select(tickets).where(tickets.c.id == ticket_id).with_for_update()
                    )
                    .mappings()
                    .first()
                )
                if found is None:
                    raise NotFoundError(f"no ticket {ticket_id!r}")
                ticket = _ticket(found, self._alert_ids(connection, [ticket_id])[ticket_id])
                change = make(ticket)
                if change is None:
                    return None
                if new_alert is not None:
                    self._attach(connection, ticket_id, [new_alert], change.event.at)
                connection.execute(
                    update(tickets).where(tickets.c.id == ticket_id).values(_row(change.ticket))
                )
                self._record(connection, change)
        except IntegrityError:
            if new_alert is None:
                raise
            return None
        self.after_commit()
        return change

    def change_many(
        self, ticket_id: str, make: Callable[[Ticket], list[TicketChange]]
    ) -> list[TicketChange]:
        """Several steps on one ticket in one transaction (all or none), under its row lock."""
        with self.engine.begin() as connection:
            found = (
                connection.execute(
                    select(tickets).where(tickets.c.id == ticket_id).with_for_update()
                )
                .mappings()
                .first()
            )
            if found is None:
                raise NotFoundError(f"no ticket {ticket_id!r}")
            ticket = _ticket(found, self._alert_ids(connection, [ticket_id])[ticket_id])
            changes = make(ticket)
            if changes:
                connection.execute(
                    update(tickets)
                    .where(tickets.c.id == ticket_id)
                    .values(_row(changes[-1].ticket))
                )
                for change in changes:
                    self._record(connection, change)
        if changes:
            self.after_commit()
        return changes

    def last_step_about(self, ticket_id: str, alert_id: str) -> str | None:
        """The action of the newest audit line of the ticket that names the alert."""
        query = (
            select(ticket_events.c.action)
            .where(ticket_events.c.ticket_id == ticket_id, ticket_events.c.alert_id == alert_id)
            .order_by(ticket_events.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            value: str | None = connection.execute(query).scalar()
            return value

    def _record(self, connection: Connection, change: TicketChange) -> None:
        """The audit line, and the event for the log (in the caller's transaction)."""
        done = connection.execute(
            insert(ticket_events).values(_event_row(change.ticket.id, change.event))
        )
        key = done.inserted_primary_key
        assert key is not None
        event_id = int(key[0])
        connection.execute(
            insert(ticket_outbox).values(
                ticket_id=change.ticket.id,
                institution=change.ticket.institution,
                body=ticket_body(change, event_id),
            )
        )

    def _attach(
        self, connection: Connection, ticket_id: str, alert_ids: Sequence[str], at: datetime
    ) -> None:
        if alert_ids:
            connection.execute(
                insert(ticket_alerts),
                [
                    {"alert_id": a, "ticket_id": ticket_id, "attached_at": at, "state": "active"}
                    for a in alert_ids
                ],
            )

    def note_alert_state(self, alert_id: str, state: str) -> None:
        """What the log last said of an attached alert's state (nothing if not attached)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(ticket_alerts)
                .where(ticket_alerts.c.alert_id == alert_id)
                .where(or_(ticket_alerts.c.state.is_(None), ticket_alerts.c.state != state))
                .values(state=state)
            )

    def alert_states(self, alert_ids: Sequence[str]) -> dict[str, str | None]:
        """The last known state of attached alerts."""
        if not alert_ids:
            return {}
        query = select(ticket_alerts.c.alert_id, ticket_alerts.c.state).where(
            ticket_alerts.c.alert_id.in_(list(alert_ids))
        )
        with self.engine.connect() as connection:
            return {row[0]: row[1] for row in connection.execute(query)}

    def tickets_of_alerts(self, alert_ids: Sequence[str]) -> dict[str, str]:
        """The ticket of each alert that has one (the alert's `ticket_id`)."""
        if not alert_ids:
            return {}
        query = select(ticket_alerts.c.alert_id, ticket_alerts.c.ticket_id).where(
            ticket_alerts.c.alert_id.in_(list(alert_ids))
        )
        with self.engine.connect() as connection:
            return {row[0]: row[1] for row in connection.execute(query)}

    def pending_events(self) -> list[dict[str, Any]]:
        """Ticket events not yet moved to the event log, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(ticket_outbox.c.body).order_by(ticket_outbox.c.id))
            return [row[0] for row in rows]

    def add_trigger(self, trigger: Trigger) -> bool:
        """Remember an alert that opens a ticket later; False if it was remembered already."""
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(ticket_triggers).values(
                        alert_id=trigger.alert_id, due_at=trigger.due_at, alert=trigger.alert
                    )
                )
        except IntegrityError:
            return False
        return True

    def drop_trigger(self, alert_id: str) -> bool:
        """Forget a waiting alert; True if it was waiting."""
        with self.engine.begin() as connection:
            done = connection.execute(
                delete(ticket_triggers).where(ticket_triggers.c.alert_id == alert_id)
            )
        return bool(done.rowcount)

    # ------------------------------------------------------------------ reads

    def get(self, ticket_id: str) -> Ticket | None:
        """One ticket with its alert ids, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(tickets).where(tickets.c.id == ticket_id)).mappings()
            found = row.first()
            if found is None:
                return None
            return _ticket(found, self._alert_ids(connection, [ticket_id])[ticket_id])

    def open_for(self, device: str, category: str) -> Ticket | None:
        """The open ticket of a device and category, if any."""
        key = f"{device}|{category}"
        with self.engine.connect() as connection:
            found = (
                connection.execute(select(tickets).where(tickets.c.open_key == key))
                .mappings()
                .first()
            )
            if found is None:
                return None
            return _ticket(found, self._alert_ids(connection, [found["id"]])[found["id"]])

    def ticket_of_alert(self, alert_id: str) -> str | None:
        """The ticket an alert is attached to."""
        with self.engine.connect() as connection:
            value: str | None = connection.execute(
                select(ticket_alerts.c.ticket_id).where(ticket_alerts.c.alert_id == alert_id)
            ).scalar()
            return value

    def events(self, ticket_id: str) -> list[TicketEvent]:
        """The audit trail, oldest first."""
        query = (
            select(ticket_events)
            .where(ticket_events.c.ticket_id == ticket_id)
            .order_by(ticket_events.c.id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            TicketEvent.model_validate({k: r[k] for k in TicketEvent.model_fields}) for r in rows
        ]

    def search(self, query: TicketQuery, limit: int | None = 100, offset: int = 0) -> list[Ticket]:
        """Tickets matching, newest found first; `limit` None: all of them."""
        statement = (
            select(tickets)
            .where(*self._filters(query))
            .order_by(tickets.c.found_at.desc(), tickets.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
            ids = self._alert_ids(connection, [r["id"] for r in rows])
        return [_ticket(r, ids[r["id"]]) for r in rows]

    def count(self, query: TicketQuery) -> int:
        """How many tickets match."""
        statement = select(func.count()).select_from(tickets).where(*self._filters(query))
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar() or 0)

    def overdue(self, now: datetime, below_level: int, limit: int = 500) -> list[Ticket]:
        """Open tickets past their deadline whose escalation level is below `below_level`."""
        statement = (
            select(tickets)
            .where(
                tickets.c.status.in_(OPEN_STATUSES),
                tickets.c.due_at < now,
                tickets.c.escalation_level < below_level,
            )
            .order_by(tickets.c.due_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
            ids = self._alert_ids(connection, [r["id"] for r in rows])
        return [_ticket(r, ids[r["id"]]) for r in rows]

    def due_triggers(self, now: datetime, limit: int = 500) -> list[Trigger]:
        """Waiting alerts whose delay has passed, oldest first."""
        statement = (
            select(ticket_triggers)
            .where(ticket_triggers.c.due_at <= now)
            .order_by(ticket_triggers.c.due_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
        return [Trigger(r["alert_id"], r["due_at"], r["alert"]) for r in rows]

    def trigger_ids(self) -> set[str]:
        """The alerts waiting to open a ticket."""
        with self.engine.connect() as connection:
            return set(connection.execute(select(ticket_triggers.c.alert_id)).scalars())

    def evidence_files(self, institution: str) -> dict[str, int]:
        """Stored files the audit trails of the institution's tickets refer to: sha256 -> size.

        Each file once, however many steps or tickets refer to it: what counts against the
        institution's attachment quota.
        """
        statement = (
            select(ticket_events.c.evidence)
            .join(tickets, tickets.c.id == ticket_events.c.ticket_id)
            .where(tickets.c.institution == institution, _HAS_EVIDENCE)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).scalars().all()
        return {sha256: size for sha256, size in _stored_files(rows)}

    def referenced_files(self) -> set[str]:
        """The sha256 of every stored file any ticket's audit trail refers to."""
        statement = select(ticket_events.c.evidence).where(_HAS_EVIDENCE)
        with self.engine.connect() as connection:
            rows = connection.execute(statement).scalars().all()
        return {sha256 for sha256, _ in _stored_files(rows)}

    def _filters(self, query: TicketQuery) -> list[Any]:
        c = tickets.c
        where: list[Any] = []
        if query.statuses:
            where.append(c.status.in_(list(query.statuses)))
        if query.institutions is not None:
            where.append(c.institution.in_(list(query.institutions)))
        if query.sources:
            where.append(c.source.in_(list(query.sources)))
        if query.category:
            where.append(c.category == query.category)
        if query.device:
            where.append(c.device == query.device)
        if query.found_from is not None:
            where.append(c.found_at >= query.found_from)
        if query.found_before is not None:
            where.append(c.found_at < query.found_before)
        if query.overdue_at is not None:
            where.append(and_(c.status.in_(OPEN_STATUSES), c.due_at < query.overdue_at))
        return where

    def _alert_ids(self, connection: Connection, ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {i: [] for i in ids}
        if ids:
            statement = (
                select(ticket_alerts.c.ticket_id, ticket_alerts.c.alert_id)
                .where(ticket_alerts.c.ticket_id.in_(list(ids)))
                .order_by(ticket_alerts.c.attached_at, ticket_alerts.c.alert_id)
            )
            for ticket_id, alert_id in connection.execute(statement):
                found[ticket_id].append(alert_id)
        return found

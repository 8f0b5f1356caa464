"""SQL tables of the hazard ledger (created by core/migrations/versions/0003_tickets.py)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from core.db import UtcDateTime

metadata = MetaData()
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")

tickets = Table(
    "tickets",
    metadata,
    Column("id", String(32), primary_key=True),
    # "device|category" while a sensor ticket is open, NULL otherwise: the unique constraint
    # keeps one open ticket per (device, category) even with two processes writing at once.
    Column("open_key", String(200), unique=True),
    Column("category", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("source", String(32), nullable=False),
    Column("institution", String(64), nullable=False),
    Column("device", String(64)),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("severity", String(16), nullable=False),
    Column("major_hazard", Boolean, nullable=False, default=False),
    Column("responsible_unit", String(200), nullable=False),
    Column("responsible_person", String(100), nullable=False),
    Column("responsible_phone", String(40)),
    Column("measures", Text, nullable=False, default=""),
    Column("verification_required", Boolean, nullable=False, default=True),
    Column("found_at", UtcDateTime(), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("closed_at", UtcDateTime()),
    Column("rectified_by", String(100)),
    Column("verified_by", String(100)),
    Column("reported_by", String(100), nullable=False),
    Column("occurrences", Integer, nullable=False, default=1),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("listed_supervision", Boolean, nullable=False, default=False),
    Index("ix_tickets_institution_found", "institution", "found_at"),
    # Open tickets of a town's institutions, newest first: 188 ms -> 4 ms on 1,000,000 tickets
    # in SQLite (bench/ticket_ledger.py).
    Index("ix_tickets_institution_status_found", "institution", "status", "found_at"),
    # The monthly reports' tickets still open from before the month (closed_at NULL or later).
    Index("ix_tickets_closed", "closed_at"),
    Index("ix_tickets_found", "found_at"),
    Index("ix_tickets_status_due", "status", "due_at"),
    Index("ix_tickets_device", "device"),
)

# The alerts behind a ticket. An alert belongs to one ticket at most (primary key), so two
# processes handling the same alert cannot both attach it.
ticket_alerts = Table(
    "ticket_alerts",
    metadata,
    Column("alert_id", String(32), primary_key=True),
    Column("ticket_id", String(32), nullable=False),
    Column("attached_at", UtcDateTime(), nullable=False),
    # The alert's state as the ledger last saw it on the event log: whether the condition
    # behind a ticket still holds, without asking the alert engine.
    Column("state", String(16)),
    Index("ix_ticket_alerts_ticket", "ticket_id"),
)

# The audit trail: appended, never updated.
ticket_events = Table(
    "ticket_events",
    metadata,
    Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    Column("ticket_id", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("note", Text),
    Column("status", String(32), nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("alert_id", String(32)),
    Index("ix_ticket_events_ticket", "ticket_id", "id"),
)

# Alerts whose rule opens a ticket only after a delay, while they stay open.
ticket_triggers = Table(
    "ticket_triggers",
    metadata,
    Column("alert_id", String(32), primary_key=True),
    Column("due_at", UtcDateTime(), nullable=False, index=True),
    Column("alert", JSON, nullable=False),
)

# Ticket changes not yet on the event log: written in the transaction of the change, moved to
# the log and deleted by the relay (tickets/relay.py). A crash between the two repeats an
# event; its `event_id` tells the repeat.
ticket_outbox = Table(
    "ticket_outbox",
    metadata,
    Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    Column("ticket_id", String(32), nullable=False),
    Column("institution", String(64), nullable=False),
    Column("body", JSON, nullable=False),
)

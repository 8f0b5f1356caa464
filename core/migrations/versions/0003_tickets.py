"""Tickets: the hazard ledger, the alerts behind each ticket, the audit trail, delayed openings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.db import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the ticket tables."""
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("open_key", sa.String(200), unique=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("institution", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64)),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("major_hazard", sa.Boolean, nullable=False),
        sa.Column("responsible_unit", sa.String(200), nullable=False),
        sa.Column("responsible_person", sa.String(100), nullable=False),
        sa.Column("responsible_phone", sa.String(40)),
        sa.Column("measures", sa.Text, nullable=False),
        sa.Column("verification_required", sa.Boolean, nullable=False),
        sa.Column("found_at", UtcDateTime(), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("closed_at", UtcDateTime()),
        sa.Column("rectified_by", sa.String(100)),
        sa.Column("verified_by", sa.String(100)),
        sa.Column("reported_by", sa.String(100), nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("listed_supervision", sa.Boolean, nullable=False),
    )
    op.create_index("ix_tickets_institution_found", "tickets", ["institution", "found_at"])
    op.create_index("ix_tickets_found", "tickets", ["found_at"])
    op.create_index("ix_tickets_status_due", "tickets", ["status", "due_at"])
    op.create_index("ix_tickets_device", "tickets", ["device"])
    op.create_table(
        "ticket_alerts",
        sa.Column("alert_id", sa.String(32), primary_key=True),
        sa.Column("ticket_id", sa.String(32), nullable=False),
        sa.Column("attached_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_ticket_alerts_ticket", "ticket_alerts", ["ticket_id"])
    op.create_table(
        "ticket_events",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("alert_id", sa.String(32)),
    )
    op.create_index("ix_ticket_events_ticket", "ticket_events", ["ticket_id", "id"])
    op.create_table(
        "ticket_triggers",
        sa.Column("alert_id", sa.String(32), primary_key=True),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("alert", sa.JSON, nullable=False),
    )
    op.create_index("ix_ticket_triggers_due_at", "ticket_triggers", ["due_at"])


def downgrade() -> None:
    """Drop the ticket tables."""
    for table in ("ticket_triggers", "ticket_events", "ticket_alerts", "tickets"):
        op.drop_table(table)

"""Alerts: alerts, their history, the engine's checkpoint, the notification outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.db import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the alert tables."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("open_key", sa.String(400), unique=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("code", sa.String(100), nullable=False),
        sa.Column("institution", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(100)),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("raised_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("cleared_at", UtcDateTime()),
        sa.Column("acknowledged_at", UtcDateTime()),
        sa.Column("acknowledged_by", sa.String(100)),
        sa.Column("note", sa.Text),
        sa.Column("resolved_at", UtcDateTime()),
        sa.Column("resolved_by", sa.String(100)),
        sa.Column("hushed_at", UtcDateTime()),
        sa.Column("escalations", sa.Integer, nullable=False),
        sa.Column("confirmed", sa.Boolean, nullable=False),
        sa.Column("ticket_id", sa.String(32)),
    )
    op.create_index("ix_alerts_institution", "alerts", ["institution"])
    op.create_index("ix_alerts_device", "alerts", ["device"])
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])
    op.create_table(
        "alert_history",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("value", sa.Float),
    )
    op.create_index("ix_alert_history_alert", "alert_history", ["alert_id", "id"])
    op.create_table(
        "alert_checkpoint",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("lsn", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime()),
        sa.Column("last_error", sa.String(500)),
    )
    op.create_index("ix_outbox_pending", "outbox", ["delivered_at", "target", "id"])


def downgrade() -> None:
    """Drop the alert tables."""
    for table in ("outbox", "alert_checkpoint", "alert_history", "alerts"):
        op.drop_table(table)

"""The event log between the stages: consumer positions, the ticket outbox, alert states.

The SQL outbox of alert notifications goes: notifications are read from the event log now
(each output keeps its own position beside the log). Rows it still held undelivered at the
upgrade are not sent. The alert-to-ticket link is the `ticket_alerts` table, read as a join.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.db import UtcDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the positions and the ticket outbox; drop the alert outbox."""
    op.create_table(
        "consumer_checkpoints",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ticket_outbox",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(32), nullable=False),
        sa.Column("institution", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    with op.batch_alter_table("ticket_alerts") as batch:
        batch.add_column(sa.Column("state", sa.String(16)))
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")


def downgrade() -> None:
    """Back to the alert outbox."""
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
    with op.batch_alter_table("ticket_alerts") as batch:
        batch.drop_column("state")
    op.drop_table("ticket_outbox")
    op.drop_table("consumer_checkpoints")

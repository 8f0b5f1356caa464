"""Tickets: an index on the closing time, for the monthly reports' older open tickets.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index tickets by closing time (NULL while open)."""
    op.create_index("ix_tickets_closed", "tickets", ["closed_at"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_tickets_closed", table_name="tickets")

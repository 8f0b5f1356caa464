"""Tickets: an index for the open tickets of a set of institutions (a town office's view).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index tickets by institution, status and finding time."""
    op.create_index(
        "ix_tickets_institution_status_found", "tickets", ["institution", "status", "found_at"]
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_tickets_institution_status_found", table_name="tickets")

"""Registry: institutions and devices.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the registry tables."""
    op.create_table(
        "institutions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("town", sa.String(100)),
        sa.Column("address", sa.String(300)),
        sa.Column("lat", sa.Float()),
        sa.Column("lon", sa.Float()),
        sa.Column("principal_name", sa.String(100)),
        sa.Column("principal_phone", sa.String(40)),
        sa.Column("safety_manager_name", sa.String(100)),
        sa.Column("safety_manager_phone", sa.String(40)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "institution_id",
            sa.String(64),
            sa.ForeignKey("institutions.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(100)),
        sa.Column("building", sa.String(100)),
        sa.Column("floor", sa.String(20)),
        sa.Column("room", sa.String(50)),
        sa.Column("zone", sa.String(100)),
        sa.Column("heartbeat_s", sa.Integer(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("auto_registered", sa.Boolean(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_devices_institution_id", "devices", ["institution_id"])


def downgrade() -> None:
    """Drop the registry tables."""
    op.drop_index("ix_devices_institution_id", "devices")
    op.drop_table("devices")
    op.drop_table("institutions")

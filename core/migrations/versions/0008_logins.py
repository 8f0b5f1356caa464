"""People log in: password hashes, sessions, failed-login counts, the audit log; tokens with
an expiry and a rotation.

A user may now have no token (a person who logs in): `token_sha256` becomes nullable. Tokens
issued before this revision expire a year after the upgrade (`token_expires_at`); rotate them
before (`hazardwatch user rotate-token NAME`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from core.db import UtcDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EXISTING_TOKENS_DAYS = 365


def upgrade() -> None:
    """Add the password and token columns of users; create sessions, login_failures and
    audit_log."""
    with op.batch_alter_table("users") as batch:
        batch.alter_column("token_sha256", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("password_hash", sa.String(255), nullable=True))
        batch.add_column(sa.Column("password_changed_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("token_expires_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("previous_token_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_token_until", UtcDateTime(), nullable=True))
        batch.create_index("ix_users_previous_token_sha256", ["previous_token_sha256"])
    users = sa.table(
        "users",
        sa.column("token_sha256", sa.String(64)),
        sa.column("token_expires_at", UtcDateTime()),
    )
    expires = datetime.now(UTC) + timedelta(days=EXISTING_TOKENS_DAYS)
    op.execute(
        users.update()
        .where(users.c.token_sha256.is_not(None))
        .values(token_expires_at=sa.bindparam("expires", expires, type_=UtcDateTime()))
    )
    op.create_table(
        "sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
    )
    op.create_index("ix_sessions_user_name", "sessions", ["user_name"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", UtcDateTime(), nullable=False),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("object", sa.String(200), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_at", "audit_log", ["actor", "at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])


def downgrade() -> None:
    """Drop what the upgrade added. Users without a token cannot stay: they are deleted."""
    op.drop_table("audit_log")
    op.drop_table("login_failures")
    op.drop_table("sessions")
    op.execute("DELETE FROM users WHERE token_sha256 IS NULL")
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_previous_token_sha256")
        batch.drop_column("previous_token_until")
        batch.drop_column("previous_token_sha256")
        batch.drop_column("token_expires_at")
        batch.drop_column("password_changed_at")
        batch.drop_column("password_hash")
        batch.alter_column("token_sha256", existing_type=sa.String(64), nullable=False)

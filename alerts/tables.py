"""SQL tables of the alerts projection (core/migrations/versions/0002_alerts.py, 0007)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from core.db import UtcDateTime

metadata = MetaData()
# SQLite numbers rows only with INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(32), primary_key=True),
    # "subject|kind|code" while the alert is open, NULL once resolved: the unique constraint
    # keeps one open alert per (device, kind) even if two writers race (NULLs never collide).
    Column("open_key", String(400), unique=True),
    Column("subject", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("code", String(100), nullable=False, default=""),
    Column("institution", String(64), nullable=False, index=True),
    Column("device", String(64), nullable=False, index=True),
    Column("zone", String(100)),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("raised_at", UtcDateTime(), nullable=False, index=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Column("count", Integer, nullable=False, default=1),
    Column("value", Float),
    Column("detail", String(500), nullable=False, default=""),
    Column("cleared_at", UtcDateTime()),
    Column("acknowledged_at", UtcDateTime()),
    Column("acknowledged_by", String(100)),
    Column("note", Text),
    Column("resolved_at", UtcDateTime()),
    Column("resolved_by", String(100)),
    Column("hushed_at", UtcDateTime()),
    Column("escalations", Integer, nullable=False, default=0),
    Column("confirmed", Boolean, nullable=False, default=False),
    # No longer written: an alert's ticket is the ledger's `ticket_alerts`, read as a join.
    Column("ticket_id", String(32)),
)

alert_history = Table(
    "alert_history",
    metadata,
    Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    Column("alert_id", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("note", Text),
    Column("state", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("value", Float),
    Index("ix_alert_history_alert", "alert_id", "id"),
)

# How far through the raw spool the engine's changes are stored: after a crash, messages up
# to here are not evaluated a second time.
alert_checkpoint = Table(
    "alert_checkpoint",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("lsn", BigInteger, nullable=False),
)

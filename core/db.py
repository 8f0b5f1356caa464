"""The SQL database: engine set-up and schema migrations (Alembic)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Dialect, Engine, TypeDecorator, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.health import Component

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, also on SQLite, which keeps no offset."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store UTC; refuse naive times, which would be ambiguous."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: hazardwatch stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite file, as on a first run before the data dir exists."""
    path = url.split("///", 1)[-1]
    if url.startswith("sqlite") and path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


# Pages of write-ahead log after which a committing connection checkpoints it itself (copies
# the log into the database and syncs it) while its caller waits. The service checkpoints in
# the background instead (WalCheckpointer), so that the alert writer never pays for it; this
# is the backstop should that thread not keep up.
WAL_AUTOCHECKPOINT_PAGES = 50_000


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and enforced foreign keys."""
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Durable when the commit returns for a crash of the process; a power cut may take
            # the last commits (the raw spool, fdatasync'ed, still holds what caused them).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class WalCheckpointer:
    """Checkpoints a SQLite database's write-ahead log every second, as a task of the service.

    PASSIVE: it copies what it can without waiting for, or blocking, readers and writers.
    """

    def __init__(self, engine: Engine, interval_s: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval_s

    @property
    def needed(self) -> bool:
        """Only SQLite has a write-ahead log to checkpoint."""
        return self._engine.dialect.name == "sqlite"

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: (busy, log pages, pages checkpointed)."""
        with self._engine.connect() as connection:
            row = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(row[0]), int(row[1]), int(row[2])

    async def run(self, component: Component) -> None:
        """Checkpoint until cancelled; a failed round is reported and tried again."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception as exc:  # noqa: BLE001 - the backstop is wal_autocheckpoint
                component.failing(f"{type(exc).__name__}: {exc}")
            else:
                component.progress()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """Alembic's configuration, built in code: no alembic.ini to keep in step."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`."""
    _ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)

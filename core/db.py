"""The SQL database: engine set-up and schema migrations (Alembic)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Dialect, Engine, TypeDecorator, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.errors import HazardwatchError
from core.health import Component
from core.loops import repeat

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


@dataclass(frozen=True)
class Timeouts:
    """How long the database may take (contract: a hung database must not hang us)."""

    connect_s: float = 5.0
    statement_s: float = 15.0
    lock_s: float = 5.0


def make_engine(url: str, timeouts: Timeouts | None = None) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and enforced foreign keys; PostgreSQL
    connect, statement and lock timeouts and TCP keepalives."""
    timeouts = timeouts or Timeouts()
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"timeout": timeouts.lock_s * 2})

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
    options = (
        f"-c statement_timeout={int(timeouts.statement_s * 1000)} "
        f"-c lock_timeout={int(timeouts.lock_s * 1000)} "
        "-c idle_in_transaction_session_timeout=60000"
    )
    return create_engine(
        url,
        # No ping before each use: against a hung server it would hang unseen by the watch
        # (below). A connection that died is found by its first statement, which fails, and
        # the pool starts afresh; callers retry.
        pool_pre_ping=False,
        pool_recycle=1800,
        pool_timeout=timeouts.connect_s,
        connect_args={
            "connect_timeout": max(1, round(timeouts.connect_s)),
            "options": options,
            # A peer that vanished (a dead host, a cut cable) is noticed in about a minute.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )


class DatabaseUnavailableError(HazardwatchError):
    """The database does not answer: the caller should try again later (HTTP 503)."""


class DatabaseWatch:
    """Knows whether the database answers, from the statements in flight.

    A database that hangs (a stalled disk, a stopped server) answers no statement and no
    timeout of its own fires; the client waits. Statements in flight longer than
    `patience_s` say so, and callers that can refuse (HTTP requests) refuse at once instead of
    joining the queue of stuck threads.
    """

    def __init__(self, engine: Engine, patience_s: float = 3.0) -> None:
        self._patience = patience_s
        self._lock = threading.Lock()
        self._inflight: dict[int, float] = {}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._error)

    # A thread runs one statement at a time, and the events of a statement come in its
    # thread: the thread is the key (a cursor is not always given to handle_error).
    def _before(self, *_args: Any) -> None:
        with self._lock:
            self._inflight[threading.get_ident()] = time.monotonic()

    def _after(self, *_args: Any) -> None:
        with self._lock:
            self._inflight.pop(threading.get_ident(), None)

    def _error(self, _context: Any) -> None:
        self._after()

    def waiting_s(self) -> float:
        """How long the oldest statement in flight has waited (0: none)."""
        with self._lock:
            oldest = min(self._inflight.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    @property
    def away(self) -> bool:
        """True while a statement has waited longer than the patience."""
        return self.waiting_s() > self._patience

    def check(self) -> None:
        """Raise DatabaseUnavailableError while the database does not answer."""
        waited = self.waiting_s()
        if waited > self._patience:
            raise DatabaseUnavailableError(f"the database has not answered for {waited:.0f} s")


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
        """Checkpoint until cancelled; a failed round is reported and tried again (the
        backstop is wal_autocheckpoint)."""
        await repeat(component, self.checkpoint, every_s=self._interval)


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

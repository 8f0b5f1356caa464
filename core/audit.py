"""The audit log: who did what, when, from where, and what changed.

Every login, failed login, refusal while locked out, lock-out, logout, password change and
reset, change to a user (added, revoked, token rotated), the bootstrap token's revocation, and
every change made through the API (alerts acknowledged and resolved, tickets reported and
their steps, evidence uploaded) is an entry. The bureau and admins read it
(GET /api/v1/audit).

Entries are queued and written by a background task within a second (`flush`), so that an
action that needs no database (acknowledging an alarm on the board) never waits for one that
is slow or away: entries wait in memory until it answers again (at most MAX_PENDING; a crash
loses what was not yet written, normally under a second of entries). The CLI writes its
entries before it exits.

No secret is ever written: a detail named like one (…password, …token, …cookie, …secret,
…hash, old, new) is replaced by `[hidden]` whatever its value, as a last guard; callers do not
pass them in the first place.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy.sql import Select

from core.clock import Clock, SystemClock
from core.db import UtcDateTime
from core.health import Component
from core.loops import repeat

log = logging.getLogger(__name__)

metadata = MetaData()

_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(40), nullable=False),
    Column("object", String(200), nullable=True),
    Column("address", String(64), nullable=True),
    Column("detail", JSON, nullable=False),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_actor_at", "actor", "at"),
    Index("ix_audit_log_action_at", "action", "at"),
)

MAX_PENDING = 100_000
FLUSH_EVERY_S = 0.5
HIDDEN = "[hidden]"
# A detail whose name ends so is hidden, whatever it holds (also `old` and `new`: passwords).
_SECRET_ENDINGS = ("password", "token", "cookie", "secret", "session_id", "hash")
_SECRET_NAMES = frozenset({"old", "new"})
NOBODY = "-"  # the actor of a failed login naming no user that exists


class AuditEntry(BaseModel):
    """One entry of the audit log."""

    id: int
    at: datetime
    actor: str = Field(description="the user who acted (cli:OS-USER for the command line)")
    action: str = Field(description="login, login_failed, ticket_verified, …")
    object: str | None = Field(description="what was acted on: a user, ticket, alert, session")
    address: str | None = Field(description="the client's address (local for the CLI)")
    detail: dict[str, Any] = Field(description="what changed")


@dataclass(frozen=True)
class AuditQuery:
    """Which entries: by actor, action and time (`since` included, `before` not)."""

    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    before: datetime | None = None

    def where(self, query: Select[Any]) -> Select[Any]:
        """The query, filtered."""
        if self.actor is not None:
            query = query.where(audit_log.c.actor == self.actor)
        if self.action is not None:
            query = query.where(audit_log.c.action == self.action)
        if self.since is not None:
            query = query.where(audit_log.c.at >= self.since)
        if self.before is not None:
            query = query.where(audit_log.c.at < self.before)
        return query


def scrub(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The detail as JSON values, anything named like a secret hidden (at any depth)."""
    plain = orjson.loads(orjson.dumps(dict(detail), default=str))
    return _hide(plain)  # type: ignore[no-any-return]


def _hide(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: HIDDEN if _secret(str(key)) else _hide(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_hide(item) for item in value]
    return value


def _secret(key: str) -> bool:
    name = key.lower()
    return name in _SECRET_NAMES or name.endswith(_SECRET_ENDINGS)


class AuditLog:
    """Entries queued by `record`, written by `flush` (the `audit-writer` task)."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()  # the queue
        self._writing = threading.Lock()  # one flush at a time
        self._pending: deque[tuple[int, dict[str, Any]]] = deque()  # (sequence number, row)
        self._seq = 0
        self.dropped = 0

    def record(
        self,
        actor: str,
        action: str,
        object: str | None = None,
        address: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an entry, stamped now (never blocks, never raises for the database)."""
        row = {
            "at": self._clock.now(),
            "actor": actor[:64],
            "action": action[:40],
            "object": object[:200] if object is not None else None,
            "address": address[:64] if address is not None else None,
            "detail": scrub(detail or {}),
        }
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error(
                        "the audit log cannot be written and %d entries wait: %d dropped",
                        MAX_PENDING,
                        self.dropped,
                    )
            self._seq += 1
            self._pending.append((self._seq, row))

    @property
    def pending(self) -> int:
        """Entries not yet written."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write the queued entries; how many. On a database error they stay queued and the
        error is raised (the task reports it and tries again)."""
        with self._writing:
            with self._lock:
                batch = list(self._pending)
            if not batch:
                return 0
            with self._engine.begin() as connection:
                connection.execute(insert(audit_log), [row for _, row in batch])
            last = batch[-1][0]
            with self._lock:  # those written (some may have been dropped meanwhile)
                while self._pending and self._pending[0][0] <= last:
                    self._pending.popleft()
            return len(batch)

    async def run(self, component: Component) -> None:
        """Write entries as they come, until cancelled."""
        await repeat(component, self.flush, every_s=FLUSH_EVERY_S)

    def search(self, query: AuditQuery, *, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        """Entries, newest first."""
        statement = (
            query.where(select(audit_log))
            .order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
        return [AuditEntry.model_validate(dict(row)) for row in rows]

    def count(self, query: AuditQuery) -> int:
        """How many entries match."""
        statement = query.where(select(func.count()).select_from(audit_log))
        with self._engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())

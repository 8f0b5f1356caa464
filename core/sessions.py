"""Sessions of people who logged in: a random id in an HttpOnly cookie, its SHA-256 here.

A session ends at its absolute timeout (`[auth] absolute_timeout_h` after the login: a duty
shift), after `idle_timeout_min` without use, at logout, when its user changes their password
(their other sessions), when an admin resets it (all of them), and when the user is revoked
(at once: every look-up reads the user's `disabled`).

Use is written back at most every TOUCH_S (a write per request would be a write per click),
so a session may end up to that much before its idle timeout, never after it.

The CSRF token of a session is derived from its id (HMAC-SHA256, keyed by the id): only the
holder of the cookie can know it, and nothing of it is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import (
    Column,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from core.clock import Clock, SystemClock
from core.db import DatabaseUnavailableError, UtcDateTime
from core.users import User, user_from_row, users

metadata = MetaData()

sessions = Table(
    "sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("user_name", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),  # the absolute timeout
    Column("address", String(64), nullable=True),
    Column("user_agent", String(300), nullable=True),
    Index("ix_sessions_user_name", "user_name"),
    Index("ix_sessions_expires_at", "expires_at"),
)

MAX_TOUCH_S = 60.0
# While the database is away, a session used this recently in this process still gets in (the
# duty officer's console reconnecting to the live stream), within its timeouts.
STALE_S = 3600.0
_CSRF_MESSAGE = b"hazardwatch csrf token"


def session_hash(session_id: str) -> str:
    """What is stored of a session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: known only to whoever holds its id."""
    return hmac.new(session_id.encode(), _CSRF_MESSAGE, hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, sent: str | None) -> bool:
    """Whether `sent` is the session's CSRF token (in constant time)."""
    if not sent:
        return False
    return secrets.compare_digest(sent.encode(), csrf_token(session_id).encode())


@dataclass(frozen=True)
class Session:
    """A live session (never its id: only its hash, `key`)."""

    key: str
    user: User
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    address: str | None
    user_agent: str | None

    @property
    def short(self) -> str:
        """How the audit log names it: a prefix of its hash (no secret)."""
        return f"session:{self.key[:12]}"


class SessionStore:
    """Sessions in the SQL database; every look-up asks it (a logout, a password change or a
    revocation by another process counts at once), unless it is away."""

    def __init__(
        self,
        engine: Engine,
        *,
        idle: timedelta,
        absolute: timedelta,
        clock: Clock | None = None,
        away: Callable[[], bool] = lambda: False,
    ) -> None:
        self._engine = engine
        self.idle = idle
        self.absolute = absolute
        self._clock = clock or SystemClock()
        self._away = away
        self._touch = timedelta(seconds=min(MAX_TOUCH_S, idle.total_seconds() / 10))
        self._lock = threading.Lock()
        self._recent: dict[str, tuple[datetime, Session]] = {}  # key -> (last use, session)

    def start(self, user: User, address: str | None, user_agent: str | None) -> tuple[str, Session]:
        """A new session of `user`: its id (for the cookie, never stored) and the session.
        Sessions past their timeouts are deleted on the way."""
        now = self._clock.now()
        session_id = secrets.token_urlsafe(32)
        session = Session(
            key=session_hash(session_id),
            user=user,
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.absolute,
            address=address[:64] if address else None,
            user_agent=user_agent[:300] if user_agent else None,
        )
        with self._engine.begin() as connection:
            connection.execute(
                delete(sessions).where(
                    or_(sessions.c.expires_at <= now, sessions.c.last_seen_at <= now - self.idle)
                )
            )
            connection.execute(
                insert(sessions).values(
                    id_sha256=session.key,
                    user_name=user.name,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=session.expires_at,
                    address=session.address,
                    user_agent=session.user_agent,
                )
            )
        self._remember(session, now)
        return session_id, session

    def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        """The live session with this id (its user enabled), or None. `touch`: this is a use
        (the idle timeout starts again). While the database is away: a session used in this
        process within STALE_S and its timeouts, else DatabaseUnavailableError."""
        key = session_hash(session_id)
        now = self._clock.now()
        if self._away():
            return self._stale(key, now, touch)
        try:
            session = self._lookup(key)
        except SQLAlchemyError:
            found = self._stale(key, now, touch)
            if found is None:
                raise
            return found
        if session is None or not self._alive(session, session.last_seen_at, now):
            self._forget(key)
            return None
        if touch and now - session.last_seen_at >= self._touch:
            with self._engine.begin() as connection:
                connection.execute(
                    update(sessions).where(sessions.c.id_sha256 == key).values(last_seen_at=now)
                )
            session = replace(session, last_seen_at=now)
        self._remember(session, now if touch else session.last_seen_at)
        return session

    def end(self, session_id: str) -> Session | None:
        """Log out: the session is gone (None if there was none)."""
        key = session_hash(session_id)
        session = self._lookup(key)
        with self._engine.begin() as connection:
            connection.execute(delete(sessions).where(sessions.c.id_sha256 == key))
        self._forget(key)
        return session

    def end_all(self, user_name: str, *, keep: str | None = None) -> int:
        """End every session of a user (but the one whose key is `keep`); how many ended."""
        query = delete(sessions).where(sessions.c.user_name == user_name)
        if keep is not None:
            query = query.where(sessions.c.id_sha256 != keep)
        with self._engine.begin() as connection:
            done = connection.execute(query)
        with self._lock:
            for key, (_, session) in list(self._recent.items()):
                if session.user.name == user_name and key != keep:
                    del self._recent[key]
        return int(done.rowcount)

    def open_sessions(self, user_name: str) -> list[Session]:
        """The live sessions of a user, newest first."""
        now = self._clock.now()
        query = (
            _JOINED.where(sessions.c.user_name == user_name, users.c.disabled.is_(False))
        ).order_by(sessions.c.created_at.desc())
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        found = [_session(row) for row in rows]
        return [s for s in found if self._alive(s, s.last_seen_at, now)]

    def _alive(self, session: Session, last_use: datetime, now: datetime) -> bool:
        return now < session.expires_at and now - last_use < self.idle

    def _lookup(self, key: str) -> Session | None:
        query = _JOINED.where(sessions.c.id_sha256 == key, users.c.disabled.is_(False))
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _session(row) if row is not None else None

    def _stale(self, key: str, now: datetime, touch: bool) -> Session | None:
        with self._lock:
            recent = self._recent.get(key)
        if recent is None or now - recent[0] >= timedelta(seconds=STALE_S):
            raise DatabaseUnavailableError("the database is away: sessions cannot be checked")
        last_use, session = recent
        if not self._alive(session, last_use, now):
            return None
        if touch:
            self._remember(session, now)
        return session

    def _remember(self, session: Session, last_use: datetime) -> None:
        with self._lock:
            if len(self._recent) > 10_000:
                self._recent.clear()
            self._recent[session.key] = (last_use, session)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._recent.pop(key, None)


# A session with what it takes of its user (the user's own created_at is not wanted).
_JOINED = select(
    sessions,
    users.c.name,
    users.c.display_name,
    users.c.role,
    users.c.institutions,
    users.c.towns,
).join(users, users.c.name == sessions.c.user_name)


def _session(row: object) -> Session:
    values = dict(row)  # type: ignore[call-overload]
    return Session(
        key=values["id_sha256"],
        user=user_from_row(values),
        created_at=values["created_at"],
        last_seen_at=values["last_seen_at"],
        expires_at=values["expires_at"],
        address=values["address"],
        user_agent=values["user_agent"],
    )

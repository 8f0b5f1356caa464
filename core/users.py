"""Users of the API: who they are, what their role lets them do, which institutions they see.

Each user has a bearer token of their own; only its SHA-256 is stored. The bootstrap admin
token of the settings (contract section 4) stays valid as the user `admin`.

| role | sees | may |
|---|---|---|
| admin | everything | everything |
| duty_officer (值班人员) | everything | acknowledge and resolve alerts; every ticket step |
| bureau (区民政局) | everything | read; reports |
| town_office (乡镇街道民政所) | the institutions of its towns | ticket steps |
| institution (机构负责人) | its institutions | acknowledge alerts; ticket steps |
| contractor (维保单位) | its institutions | ticket steps |

Which fields and steps of a ticket each role may set or take: api/permissions.py.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core.db import DatabaseUnavailableError, UtcDateTime
from core.errors import HazardwatchError

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("display_name", String(100), nullable=False),
    Column("role", String(32), nullable=False),
    Column("institutions", JSON, nullable=False),
    Column("towns", JSON, nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)


class Role(StrEnum):
    ADMIN = "admin"
    DUTY_OFFICER = "duty_officer"
    BUREAU = "bureau"
    TOWN_OFFICE = "town_office"
    INSTITUTION = "institution"
    CONTRACTOR = "contractor"


_SEE_ALL = frozenset({Role.ADMIN, Role.DUTY_OFFICER, Role.BUREAU})
_READ_ONLY = frozenset({Role.BUREAU})
_ACK = frozenset({Role.ADMIN, Role.DUTY_OFFICER, Role.INSTITUTION})


class UserError(HazardwatchError):
    """A user cannot be added or changed as asked."""


class User(BaseModel):
    """A person (or system) using the API."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", description="login name")
    display_name: str = Field(min_length=1, max_length=100)
    role: Role
    institutions: tuple[str, ...] = Field(default=(), description="for institution, contractor")
    towns: tuple[str, ...] = Field(default=(), description="for town_office")

    @property
    def sees_all(self) -> bool:
        """Not limited to some institutions."""
        return self.role in _SEE_ALL

    @property
    def may_act(self) -> bool:
        """May change tickets (the bureau only reads)."""
        return self.role not in _READ_ONLY

    @property
    def may_acknowledge(self) -> bool:
        """May acknowledge and resolve alerts."""
        return self.role in _ACK


ADMIN = User(name="admin", display_name="bootstrap admin", role=Role.ADMIN)


def token_hash(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


CACHE_S = 10.0  # a revocation by another process (the CLI) takes effect within this
# While the database is away, a user seen this recently still gets in (the duty officer's
# console must reconnect to the live stream during an outage); unknown tokens do not.
STALE_S = 3600.0


class UserStore:
    """Users in the SQL database, looked up by token (cached for CACHE_S, or STALE_S while
    the database is away)."""

    def __init__(self, engine: Engine, away: Callable[[], bool] = lambda: False) -> None:
        self._engine = engine
        self._away = away
        self._lock = threading.Lock()
        self._by_hash: dict[str, tuple[float, User | None]] = {}

    def add(self, user: User) -> str:
        """Store a new user; return their token (shown once, never stored)."""
        if user.name == ADMIN.name:
            raise UserError("the name admin is the bootstrap token's")
        if user.role is Role.TOWN_OFFICE and not user.towns:
            raise UserError("a town_office user needs at least one town")
        if user.role in (Role.INSTITUTION, Role.CONTRACTOR) and not user.institutions:
            raise UserError(f"a {user.role} user needs at least one institution")
        token = secrets.token_urlsafe(32)
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(users).values(
                        name=user.name,
                        display_name=user.display_name,
                        role=user.role.value,
                        institutions=list(user.institutions),
                        towns=list(user.towns),
                        token_sha256=token_hash(token),
                        created_at=datetime.now(UTC),
                        disabled=False,
                    )
                )
        except IntegrityError:
            raise UserError(f"a user {user.name!r} exists already") from None
        return token

    def revoke(self, name: str) -> bool:
        """Disable a user: their token stops working at once in this process."""
        with self._engine.begin() as connection:
            done = connection.execute(
                update(users).where(users.c.name == name).values(disabled=True)
            )
        with self._lock:
            self._by_hash.clear()
        return bool(done.rowcount)

    def list(self) -> list[tuple[User, bool]]:
        """Every user, and whether they are disabled."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(users).order_by(users.c.name)).mappings().all()
        return [(_user(row), bool(row["disabled"])) for row in rows]

    def by_token(self, token: str) -> User | None:
        """The enabled user with this token, or None."""
        digest = token_hash(token)
        now = time.monotonic()
        with self._lock:
            cached = self._by_hash.get(digest)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        stale = cached[1] if cached is not None and now - cached[0] < STALE_S else None
        if self._away():  # asking would only join the stuck queries
            if stale is not None:
                return stale
            raise DatabaseUnavailableError("the database is away: users cannot be checked")
        try:
            user = self._lookup(digest)
        except SQLAlchemyError:
            if stale is not None:
                return stale
            raise
        with self._lock:
            if len(self._by_hash) > 10_000:  # wrong tokens must not grow it without end
                self._by_hash.clear()
            self._by_hash[digest] = (now, user)
        return user

    def _lookup(self, digest: str) -> User | None:
        with self._engine.connect() as connection:
            row = (
                connection.execute(
                    select(users).where(users.c.token_sha256 == digest, users.c.disabled.is_(False))
                )
                .mappings()
                .first()
            )
        return _user(row) if row is not None else None


def _user(row: object) -> User:
    values = dict(row)  # type: ignore[call-overload]
    return User(
        name=values["name"],
        display_name=values["display_name"],
        role=Role(values["role"]),
        institutions=tuple(values["institutions"]),
        towns=tuple(values["towns"]),
    )


def visible_institutions(
    user: User, institutions_in_towns: Callable[[Iterable[str]], list[str]]
) -> list[str] | None:
    """The institutions a user sees; None: all of them."""
    if user.sees_all:
        return None
    found = set(user.institutions)
    if user.towns:
        found.update(institutions_in_towns(user.towns))
    return sorted(found)

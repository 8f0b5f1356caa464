"""Users of the API: who they are, what their role lets them do, which institutions they see.

People log in with a password (only its argon2id hash is stored: core/passwords.py) and get a
session (core/sessions.py). Machines have a bearer token: only its SHA-256 is stored, it
expires (`token_expires_at`), and rotating it gives a new one while the old one works on for
a grace period at most. The bootstrap admin token of the settings (contract section 4) acts
as the user `admin` until it is revoked (core/accounts.py).

| role | sees | may |
|---|---|---|
| admin | everything | everything |
| duty_officer (值班人员) | everything | acknowledge and resolve alerts; every ticket step |
| bureau (区民政局) | everything | read; reports |
| town_office (乡镇街道民政所) | the institutions of its towns | ticket steps |
| institution (机构负责人) | its institutions | acknowledge alerts; ticket steps |
| contractor (维保单位) | its institutions | ticket steps |

The audit log (who logged in, who changed what) is read by admin and the bureau, the
supervising side; not by the duty desk, whose own actions it records.

Which fields and steps of a ticket each role may set or take: api/permissions.py.
"""

from __future__ import annotations

import builtins
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core.clock import Clock, SystemClock
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
    # A person may have no token (they log in), a machine no password.
    Column("token_sha256", String(64), nullable=True, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("password_hash", String(255), nullable=True),
    Column("password_changed_at", UtcDateTime(), nullable=True),
    Column("token_expires_at", UtcDateTime(), nullable=True),
    # After a rotation with a grace period, the token before it works until then.
    Column("previous_token_sha256", String(64), nullable=True),
    Column("previous_token_until", UtcDateTime(), nullable=True),
    Index("ix_users_previous_token_sha256", "previous_token_sha256"),
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
_AUDIT = frozenset({Role.ADMIN, Role.BUREAU})


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

    @property
    def may_read_audit(self) -> bool:
        """May read the audit log."""
        return self.role in _AUDIT


ADMIN = User(name="admin", display_name="bootstrap admin", role=Role.ADMIN)


def token_hash(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


CACHE_S = 10.0  # a revocation by another process (the CLI) takes effect within this
# While the database is away, a user seen this recently still gets in (the duty officer's
# console must reconnect to the live stream during an outage); unknown tokens do not.
STALE_S = 3600.0
DEFAULT_TOKEN_DAYS = 365
MAX_GRACE = timedelta(days=7)


@dataclass(frozen=True)
class Account:
    """A user as `hazardwatch user list` shows them: never a secret, only what exists."""

    user: User
    disabled: bool
    has_password: bool
    token_expires_at: datetime | None  # None: no token
    previous_token_until: datetime | None


def _check_scope(user: User) -> None:
    if user.name == ADMIN.name:
        raise UserError("the name admin is the bootstrap token's")
    if user.role is Role.TOWN_OFFICE and not user.towns:
        raise UserError("a town_office user needs at least one town")
    if user.role in (Role.INSTITUTION, Role.CONTRACTOR) and not user.institutions:
        raise UserError(f"a {user.role} user needs at least one institution")


class UserStore:
    """Users in the SQL database, looked up by token (cached for CACHE_S, or STALE_S while
    the database is away)."""

    def __init__(
        self,
        engine: Engine,
        away: Callable[[], bool] = lambda: False,
        clock: Clock | None = None,
    ) -> None:
        self._engine = engine
        self._away = away
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        # digest -> (monotonic time of the look-up, user, until when the token is valid)
        self._by_hash: dict[str, tuple[float, User | None, datetime | None]] = {}

    @property
    def engine(self) -> Engine:
        """The database of the users (sessions and the audit log live beside them)."""
        return self._engine

    def add(self, user: User, token_days: int = DEFAULT_TOKEN_DAYS) -> str:
        """Store a new user with a token; return the token (shown once, never stored)."""
        token = self.create(user, with_token=True, token_days=token_days)
        assert token is not None
        return token

    def create(
        self,
        user: User,
        *,
        password_hash: str | None = None,
        with_token: bool = True,
        token_days: int = DEFAULT_TOKEN_DAYS,
    ) -> str | None:
        """Store a new user with a password hash, a token or both; return the token, if any
        (shown once, never stored)."""
        _check_scope(user)
        if password_hash is None and not with_token:
            raise UserError(f"{user.name} needs a password or a token to get in")
        now = self._clock.now()
        token = secrets.token_urlsafe(32) if with_token else None
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(users).values(
                        name=user.name,
                        display_name=user.display_name,
                        role=user.role.value,
                        institutions=list(user.institutions),
                        towns=list(user.towns),
                        token_sha256=token_hash(token) if token is not None else None,
                        token_expires_at=now + timedelta(days=token_days) if token else None,
                        created_at=now,
                        disabled=False,
                        password_hash=password_hash,
                        password_changed_at=now if password_hash is not None else None,
                    )
                )
        except IntegrityError:
            raise UserError(f"a user {user.name!r} exists already") from None
        return token

    def revoke(self, name: str) -> bool:
        """Disable a user: their token stops working at once in this process (their
        sessions at once everywhere: a session's look-up reads `disabled`)."""
        with self._engine.begin() as connection:
            done = connection.execute(
                update(users).where(users.c.name == name).values(disabled=True)
            )
        self._forget()
        return bool(done.rowcount)

    def set_password(self, name: str, password_hash: str) -> bool:
        """Store a new password hash of an enabled user; False if there is none."""
        with self._engine.begin() as connection:
            done = connection.execute(
                update(users)
                .where(users.c.name == name, users.c.disabled.is_(False))
                .values(password_hash=password_hash, password_changed_at=self._clock.now())
            )
        return bool(done.rowcount)

    def rehash(self, name: str, old_hash: str, new_hash: str) -> None:
        """Replace a password hash made with older parameters (unless changed meanwhile)."""
        with self._engine.begin() as connection:
            connection.execute(
                update(users)
                .where(users.c.name == name, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )

    def credentials(self, name: str) -> tuple[User, str | None] | None:
        """An enabled user and their password hash (None: no password); None if there is
        no such enabled user."""
        with self._engine.connect() as connection:
            row = (
                connection.execute(
                    select(users).where(users.c.name == name, users.c.disabled.is_(False))
                )
                .mappings()
                .first()
            )
        return (user_from_row(row), row["password_hash"]) if row is not None else None

    def rotate_token(
        self, name: str, *, grace: timedelta = timedelta(0), token_days: int = DEFAULT_TOKEN_DAYS
    ) -> str:
        """A new token for an enabled user, valid for `token_days`; the one before works on
        for `grace` (at most MAX_GRACE, and not past its own expiry), or stops at once."""
        if not timedelta(0) <= grace <= MAX_GRACE:
            raise UserError(f"a grace period is between 0 and {MAX_GRACE.days} days")
        now = self._clock.now()
        token = secrets.token_urlsafe(32)
        with self._engine.begin() as connection:
            row = (
                connection.execute(
                    select(users.c.token_sha256, users.c.token_expires_at)
                    .where(users.c.name == name, users.c.disabled.is_(False))
                    .with_for_update()
                )
                .mappings()
                .first()
            )
            if row is None:
                raise UserError(f"no user {name!r} (or revoked)")
            until = now + grace
            if row["token_expires_at"] is not None:
                until = min(until, row["token_expires_at"])
            keep = grace > timedelta(0) and row["token_sha256"] is not None and until > now
            connection.execute(
                update(users)
                .where(users.c.name == name)
                .values(
                    token_sha256=token_hash(token),
                    token_expires_at=now + timedelta(days=token_days),
                    previous_token_sha256=row["token_sha256"] if keep else None,
                    previous_token_until=until if keep else None,
                )
            )
        self._forget()
        return token

    def list(self) -> list[tuple[User, bool]]:
        """Every user, and whether they are disabled."""
        return [(account.user, account.disabled) for account in self.accounts()]

    def accounts(self) -> builtins.list[Account]:
        """Every user with what they may get in with (never the secrets)."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(users).order_by(users.c.name)).mappings().all()
        now = self._clock.now()
        return [
            Account(
                user=user_from_row(row),
                disabled=bool(row["disabled"]),
                has_password=row["password_hash"] is not None,
                token_expires_at=row["token_expires_at"] if row["token_sha256"] else None,
                previous_token_until=(
                    row["previous_token_until"]
                    if row["previous_token_until"] is not None and row["previous_token_until"] > now
                    else None
                ),
            )
            for row in rows
        ]

    def by_token(self, token: str) -> User | None:
        """The enabled user with this unexpired token, or None."""
        digest = token_hash(token)
        now = time.monotonic()
        with self._lock:
            cached = self._by_hash.get(digest)
        if cached is not None and now - cached[0] < CACHE_S:
            return self._unexpired(cached[1], cached[2])
        stale = cached if cached is not None and now - cached[0] < STALE_S else None
        if self._away():  # asking would only join the stuck queries
            if stale is not None:
                return self._unexpired(stale[1], stale[2])
            raise DatabaseUnavailableError("the database is away: users cannot be checked")
        try:
            user, until = self._lookup(digest)
        except SQLAlchemyError:
            if stale is not None:
                return self._unexpired(stale[1], stale[2])
            raise
        with self._lock:
            if len(self._by_hash) > 10_000:  # wrong tokens must not grow it without end
                self._by_hash.clear()
            self._by_hash[digest] = (now, user, until)
        return self._unexpired(user, until)

    def _unexpired(self, user: User | None, until: datetime | None) -> User | None:
        if user is None or (until is not None and self._clock.now() >= until):
            return None
        return user

    def _lookup(self, digest: str) -> tuple[User | None, datetime | None]:
        with self._engine.connect() as connection:
            row = (
                connection.execute(
                    select(users).where(
                        or_(
                            users.c.token_sha256 == digest, users.c.previous_token_sha256 == digest
                        ),
                        users.c.disabled.is_(False),
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None, None
        if row["token_sha256"] == digest:
            return user_from_row(row), row["token_expires_at"]
        return user_from_row(row), row["previous_token_until"]

    def _forget(self) -> None:
        with self._lock:
            self._by_hash.clear()


def user_from_row(row: object) -> User:
    """The User of a row of `users` (or of a query with its name, display_name, role,
    institutions and towns)."""
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

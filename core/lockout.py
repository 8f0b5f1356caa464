"""Lock-out after failed logins, per user name and per client address, with back-off.

After `user_failures` failed logins of one name (or `address_failures` from one address), the
next login of that name (from that address) must wait `base` seconds, and each further
failure doubles the wait, up to `most`. While a wait runs, every login it covers is refused,
the right password too (HTTP 429 with Retry-After), and is not counted. A successful login
resets its name and its address; failures are forgotten after `forget` without one.

Names that do not exist are counted like those that do: the answer never tells which. The
state is in the SQL database (across restarts and processes); a key is the SHA-256 of what it
counts (`user:NAME`, `address:IP`), so that a password typed into the name field is not kept.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, delete, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError

from core.clock import Clock, SystemClock
from core.db import UtcDateTime

metadata = MetaData()

login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UtcDateTime(), nullable=False),
    Column("locked_until", UtcDateTime(), nullable=True),
)


@dataclass(frozen=True)
class LockoutPolicy:
    """How many failures before a wait, and how long the waits are."""

    user_failures: int = 5
    address_failures: int = 20
    base: timedelta = timedelta(minutes=1)
    most: timedelta = timedelta(hours=1)
    forget: timedelta = timedelta(hours=24)

    def wait(self, failures: int, threshold: int) -> timedelta | None:
        """The wait after `failures` failures of a key whose threshold is `threshold`."""
        if failures < threshold:
            return None
        doublings = min(failures - threshold, 40)
        return min(self.base * (1 << doublings), self.most)


@dataclass(frozen=True)
class Key:
    """What a count is kept for: a user name or an address."""

    kind: str  # "user" or "address"
    value: str

    @property
    def digest(self) -> str:
        """The stored key."""
        return hashlib.sha256(f"{self.kind}:{self.value}".encode()).hexdigest()


@dataclass(frozen=True)
class Locked:
    """A key that a failure has just locked."""

    key: Key
    failures: int
    until: datetime


class Lockout:
    """Counts failed logins in the SQL database and says how long a login must wait."""

    def __init__(
        self, engine: Engine, policy: LockoutPolicy | None = None, clock: Clock | None = None
    ) -> None:
        self._engine = engine
        self.policy = policy or LockoutPolicy()
        self._clock = clock or SystemClock()

    @staticmethod
    def keys(name: str, address: str | None) -> list[Key]:
        """The keys a login of `name` from `address` counts against."""
        found = [Key("user", name)]
        if address:
            found.append(Key("address", address))
        return found

    def retry_after(self, keys: list[Key]) -> int:
        """Seconds until a login covered by `keys` may be tried (0: now)."""
        now = self._clock.now()
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(login_failures.c.locked_until).where(
                    login_failures.c.key.in_([k.digest for k in keys])
                )
            ).all()
        waits = [(row[0] - now).total_seconds() for row in rows if row[0] is not None]
        longest = max(waits, default=0.0)
        return math.ceil(longest) if longest > 0 else 0

    def failed(self, keys: list[Key]) -> list[Locked]:
        """Count a failed login against each key; the keys it has locked (a wait begins)."""
        try:
            return self._failed(keys)
        except IntegrityError:  # another process counted a new key first: count on top
            return self._failed(keys)

    def _failed(self, keys: list[Key]) -> list[Locked]:
        now = self._clock.now()
        locked: list[Locked] = []
        with self._engine.begin() as connection:
            for key in keys:
                table = login_failures
                row = (
                    connection.execute(
                        select(table.c.failures, table.c.last_failure_at)
                        .where(table.c.key == key.digest)
                        .with_for_update()
                    )
                    .mappings()
                    .first()
                )
                fresh = row is None or now - row["last_failure_at"] >= self.policy.forget
                failures = 1 if fresh or row is None else int(row["failures"]) + 1
                threshold = (
                    self.policy.user_failures
                    if key.kind == "user"
                    else self.policy.address_failures
                )
                wait = self.policy.wait(failures, threshold)
                until = now + wait if wait is not None else None
                values = {"failures": failures, "last_failure_at": now, "locked_until": until}
                if row is None:
                    connection.execute(insert(table).values(key=key.digest, **values))
                else:
                    connection.execute(
                        sql_update(table).where(table.c.key == key.digest).values(**values)
                    )
                if until is not None:
                    locked.append(Locked(key, failures, until))
        return locked

    def succeeded(self, keys: list[Key]) -> None:
        """A login covered by `keys` succeeded: their counts start again."""
        with self._engine.begin() as connection:
            connection.execute(
                delete(login_failures).where(login_failures.c.key.in_([k.digest for k in keys]))
            )

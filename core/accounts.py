"""Accounts: logging in and out, passwords, tokens, revocation — each recorded in the audit
log. The HTTP API (api/routers/session.py) and the command line (`hazardwatch user …`) both
go through here, so that every path checks and records the same way.

A login is refused alike for a wrong password, a user who does not exist, one who is revoked
and one without a password (401, "wrong user name or password", after hashing against a
dummy of the same cost); a locked-out name or address is refused with 429 before anything is
checked (core/lockout.py). Logins are checked one at a time in a process (an argon2id hash
takes 64 MiB and a few hundred milliseconds: a burst of guesses must not exhaust the memory,
nor pass the lock-out by arriving together).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Engine

from core.audit import NOBODY, AuditLog
from core.clock import Clock, SystemClock
from core.errors import HazardwatchError
from core.lockout import Key, Lockout, LockoutPolicy
from core.passwords import PasswordRuleError, Passwords, check_new_password
from core.sessions import Session, SessionStore
from core.settings import AuthSettings
from core.users import ADMIN, Role, User, UserError, UserStore

log = logging.getLogger(__name__)

LOGIN_WAIT_S = 10.0  # a login waiting longer for its turn is answered 503
BOOTSTRAP_MARKER = "admin_token.revoked"  # in the data dir: the bootstrap token is refused
# In the data dir: the bootstrap token generated at first start (a file name, not a secret).
GENERATED_TOKEN = "admin_token"  # noqa: S105
LOCAL = "local"  # the address of what the command line does


class LoginRefusedError(HazardwatchError):
    """Wrong user name or password (which of them is never said)."""


class LockedOutError(HazardwatchError):
    """Too many failed logins: wait `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after} s")
        self.retry_after = retry_after


class LoginBusyError(HazardwatchError):
    """Too many logins at once: try again shortly."""


class WrongPasswordError(HazardwatchError):
    """The current password given with a change is not the user's."""


class Action(StrEnum):
    """The actions of the audit log written here (the API's own are in api/deps.py)."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGIN_LOCKED = "login_refused_locked"  # tried while a wait ran
    LOCKED_OUT = "locked_out"  # a failure began a wait
    LOGOUT = "logout"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - an action\'s name
    PASSWORD_CHANGE_FAILED = "password_change_failed"  # noqa: S105 - an action\'s name
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an action\'s name
    USER_ADDED = "user_added"
    USER_REVOKED = "user_revoked"
    USER_UNLOCKED = "user_unlocked"
    TOKEN_ROTATED = "token_rotated"  # noqa: S105 - an action\'s name
    ADMIN_TOKEN_REVOKED = "admin_token_revoked"  # noqa: S105 - an action\'s name


@dataclass(frozen=True)
class Login:
    """A successful login: the session id for the cookie (never stored) and the session."""

    session_id: str
    session: Session


class Accounts:
    """Users, their sessions, failed-login counts and the audit log, over one database."""

    def __init__(
        self,
        engine: Engine,
        settings: AuthSettings | None = None,
        *,
        clock: Clock | None = None,
        away: Callable[[], bool] = lambda: False,
        passwords: Passwords | None = None,
        users: UserStore | None = None,
    ) -> None:
        self.settings = settings or AuthSettings()
        self._clock = clock = clock or SystemClock()
        self.users = users or UserStore(engine, away, clock)
        self.sessions = SessionStore(
            engine,
            idle=timedelta(minutes=self.settings.idle_timeout_min),
            absolute=timedelta(hours=self.settings.absolute_timeout_h),
            clock=clock,
            away=away,
        )
        self.lockout = Lockout(
            engine,
            LockoutPolicy(
                user_failures=self.settings.lockout_user_failures,
                address_failures=self.settings.lockout_address_failures,
                base=timedelta(seconds=self.settings.lockout_base_s),
                most=timedelta(seconds=self.settings.lockout_max_s),
                forget=timedelta(hours=self.settings.lockout_forget_h),
            ),
            clock,
        )
        self.audit = AuditLog(engine, clock)
        self.passwords = passwords or Passwords()
        self._gate = threading.Lock()

    # --- people ----------------------------------------------------------------------------

    def login(self, name: str, password: str, address: str | None, user_agent: str | None) -> Login:
        """A new session, or LoginRefusedError, LockedOutError (LoginBusyError: too many at
        once)."""
        keys = Lockout.keys(name, address)
        with self._turn():
            found = self.users.credentials(name) if len(name) <= 64 else None
            actor = found[0].name if found is not None else NOBODY
            wait = self.lockout.retry_after(keys)
            if wait:
                self.audit.record(
                    actor, Action.LOGIN_LOCKED, address=address, detail={"retry_after_s": wait}
                )
                raise LockedOutError(wait)
            stored = found[1] if found is not None else None
            ok, rehashed = self.passwords.verify(password, stored)
            if not ok:
                self._failed(Action.LOGIN_FAILED, keys, actor, address, _why(found))
                raise LoginRefusedError("wrong user name or password")
            assert found is not None and stored is not None
            user = found[0]
            if rehashed is not None:
                self.users.rehash(user.name, stored, rehashed)
            self.lockout.succeeded(keys)
            session_id, session = self.sessions.start(user, address, user_agent)
        self.audit.record(
            user.name,
            Action.LOGIN,
            session.short,
            address,
            {"user_agent": session.user_agent, "expires_at": session.expires_at},
        )
        return Login(session_id, session)

    def logout(self, session_id: str, address: str | None) -> Session | None:
        """End the session (None: there was none)."""
        session = self.sessions.end(session_id)
        if session is not None:
            self.audit.record(session.user.name, Action.LOGOUT, session.short, address)
        return session

    def change_password(self, session: Session, old: str, new: str, address: str | None) -> int:
        """The user of `session` changes their password; their other sessions end (how many).
        WrongPasswordError (counted as a failed login), LockedOutError, PasswordRuleError."""
        name = session.user.name
        check_new_password(name, new, self.settings.password_min_length)
        keys = Lockout.keys(name, address)
        with self._turn():
            wait = self.lockout.retry_after(keys)
            if wait:
                self.audit.record(
                    name, Action.LOGIN_LOCKED, address=address, detail={"retry_after_s": wait}
                )
                raise LockedOutError(wait)
            found = self.users.credentials(name)
            ok, _ = self.passwords.verify(old, found[1] if found is not None else None)
            if not ok:
                self._failed(
                    Action.PASSWORD_CHANGE_FAILED, keys, name, address, "wrong current password"
                )
                raise WrongPasswordError("the current password is wrong")
            if new == old:
                raise PasswordRuleError("the new password must differ from the current one")
            self.users.set_password(name, self.passwords.hash(new))
            self.lockout.succeeded(keys)
        ended = self.sessions.end_all(name, keep=session.key)
        self.audit.record(
            name, Action.PASSWORD_CHANGED, f"user:{name}", address, {"sessions_ended": ended}
        )
        return ended

    # --- administration (the command line) -------------------------------------------------

    def add_user(
        self,
        user: User,
        *,
        password: str | None,
        with_token: bool,
        token_days: int | None = None,
        actor: str,
        address: str | None = LOCAL,
    ) -> str | None:
        """A new user with a password, a token or both; the token (shown once), if any.
        `address`: where the actor is (the command line: local)."""
        password_hash = None
        if password is not None:
            check_new_password(user.name, password, self.settings.password_min_length)
            password_hash = self.passwords.hash(password)
        token = self.users.create(
            user,
            password_hash=password_hash,
            with_token=with_token,
            token_days=token_days or self.settings.token_days,
        )
        credentials = [c for c, has in (("password", password), ("token", token)) if has]
        self.audit.record(
            actor,
            Action.USER_ADDED,
            f"user:{user.name}",
            address,
            {
                "role": user.role.value,
                "institutions": list(user.institutions),
                "towns": list(user.towns),
                "credentials": credentials,
            },
        )
        return token

    def reset_password(
        self, name: str, password: str, *, actor: str, address: str | None = LOCAL
    ) -> int:
        """An admin sets a user's password: every session of theirs ends (how many), and
        their failed logins are forgotten."""
        check_new_password(name, password, self.settings.password_min_length)
        if not self.users.set_password(name, self.passwords.hash(password)):
            raise UserError(f"no user {name!r} (or revoked)")
        ended = self.sessions.end_all(name)
        self.lockout.succeeded([Key("user", name)])
        self.audit.record(
            actor, Action.PASSWORD_RESET, f"user:{name}", address, {"sessions_ended": ended}
        )
        return ended

    def revoke(self, name: str, *, actor: str, address: str | None = LOCAL) -> bool:
        """Disable a user: their token and sessions stop working (False: no such user)."""
        if not self.users.revoke(name):
            return False
        ended = self.sessions.end_all(name)
        self.audit.record(
            actor, Action.USER_REVOKED, f"user:{name}", address, {"sessions_ended": ended}
        )
        return True

    def rotate_token(
        self, name: str, *, grace: timedelta, token_days: int | None = None, actor: str
    ) -> str:
        """A new token for `name` (shown once); the old one works on for `grace`."""
        days = token_days or self.settings.token_days
        token = self.users.rotate_token(name, grace=grace, token_days=days)
        self.audit.record(
            actor,
            Action.TOKEN_ROTATED,
            f"user:{name}",
            LOCAL,
            {"grace_s": int(grace.total_seconds()), "expires_in_days": days},
        )
        return token

    def unlock(self, name: str, *, actor: str) -> None:
        """Forget the failed logins of a user name (its lock-out ends)."""
        self.lockout.succeeded([Key("user", name)])
        self.audit.record(actor, Action.USER_UNLOCKED, f"user:{name}", LOCAL)

    def revoke_bootstrap_token(self, data_dir: Path, *, actor: str) -> Path:
        """Refuse the bootstrap admin token from now on (the marker file, which the service
        reads); the generated token's file is deleted. Only once an enabled admin can get in
        otherwise (UserError)."""
        admins = [
            a.user.name
            for a in self.users.accounts()
            if a.user.role is Role.ADMIN
            and not a.disabled
            and (a.has_password or a.token_expires_at)
        ]
        if not admins:
            raise UserError(
                "no admin could get in without the bootstrap token: add one first "
                "(hazardwatch user add NAME --role admin --password)"
            )
        marker = data_dir / BOOTSTRAP_MARKER
        data_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"revoked by {actor}\n")
        (data_dir / GENERATED_TOKEN).unlink(missing_ok=True)
        self.audit.record(
            actor, Action.ADMIN_TOKEN_REVOKED, f"user:{ADMIN.name}", LOCAL, {"admins": admins}
        )
        return marker

    # --- helpers ---------------------------------------------------------------------------

    def _turn(self) -> _Turn:
        return _Turn(self._gate)

    def _failed(
        self, action: str, keys: list[Key], actor: str, address: str | None, why: str
    ) -> None:
        """Record a failed login (or password change) and the lock-outs it begins."""
        locks = self.lockout.failed(keys)
        self.audit.record(actor, action, address=address, detail={"reason": why})
        for locked in locks:
            if locked.key.kind == "address":
                what = f"address:{locked.key.value}"
            else:  # a name nobody has is not written down: it may be a mistyped password
                what = f"user:{actor}" if actor != NOBODY else "user:(unknown name)"
            wait_s = round((locked.until - self._clock.now()).total_seconds())
            log.warning(
                "%s locked out until %s after %d failed logins",
                what,
                locked.until.isoformat(timespec="seconds"),
                locked.failures,
            )
            self.audit.record(
                actor,
                Action.LOCKED_OUT,
                what,
                address,
                {"failures": locked.failures, "until": locked.until, "wait_s": max(wait_s, 0)},
            )


def _why(found: tuple[User, str | None] | None) -> str:
    if found is None:
        return "no such user, or revoked"
    return "wrong password" if found[1] is not None else "the user has no password"


class _Turn:
    """One login at a time in this process; LoginBusyError after LOGIN_WAIT_S in line."""

    def __init__(self, gate: threading.Lock) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        if not self._gate.acquire(timeout=LOGIN_WAIT_S):
            raise LoginBusyError("too many logins at once: try again in a few seconds")

    def __exit__(self, *_exc: object) -> None:
        self._gate.release()


class BootstrapMarker:
    """Whether the bootstrap admin token is revoked (the marker in the data dir), looked at
    at most every `every_s`."""

    def __init__(self, data_dir: Path, every_s: float = 2.0) -> None:
        self.path = data_dir / BOOTSTRAP_MARKER
        self._every = every_s
        self._checked: float | None = None
        self._revoked = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._checked is None or now - self._checked >= self._every:
            self._revoked = self.path.exists()
            self._checked = now
        return self._revoked

"""Logins, sessions, lock-out and the audit log, on a fake clock (core/accounts.py and the
stores under it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from core.accounts import (
    Accounts,
    LockedOutError,
    LoginRefusedError,
    WrongPasswordError,
)
from core.audit import HIDDEN, NOBODY, AuditLog, AuditQuery, scrub
from core.clock import FakeClock
from core.db import make_engine, upgrade
from core.lockout import Key, LockoutPolicy
from core.passwords import PasswordRuleError, Passwords
from core.sessions import csrf_matches, csrf_token, session_hash, sessions
from core.settings import AuthSettings
from core.users import Role, User

PASSWORD = "the duty desk's passphrase"
ZHAO = User(name="zhao", display_name="赵", role=Role.DUTY_OFFICER)
ADDRESS = "10.1.2.3"


class CountingHasher(Argon2Hasher):
    """Cheap argon2id that counts how often it checks a password."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=64, parallelism=1)
        self.verified = 0

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        self.verified += 1
        return super().verify(password, hash)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("accounts") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    return str(path)


@pytest.fixture
def engine(tmp_path: Path, migrated: str) -> Engine:
    target = tmp_path / "db.sqlite"
    target.write_bytes(Path(migrated).read_bytes())
    return make_engine(f"sqlite:///{target}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


def make_accounts(
    engine: Engine, clock: FakeClock, hasher: Argon2Hasher, **auth: object
) -> Accounts:
    settings = AuthSettings.model_validate(
        {
            "idle_timeout_min": 30,
            "absolute_timeout_h": 12,
            "lockout_user_failures": 3,
            "lockout_address_failures": 5,
            "lockout_base_s": 60,
            "lockout_max_s": 600,
            **auth,
        }
    )
    return Accounts(engine, settings, clock=clock, passwords=Passwords(hasher))


@pytest.fixture
def accounts(engine: Engine, clock: FakeClock, hasher: CountingHasher) -> Accounts:
    found = make_accounts(engine, clock, hasher)
    found.add_user(ZHAO, password=PASSWORD, with_token=False, actor="cli:root")
    return found


def actions(
    accounts: Accounts, actor: str | None = None, action: str | None = None
) -> list[tuple[str, str, str | None]]:
    accounts.audit.flush()
    found = accounts.audit.search(AuditQuery(actor=actor, action=action), limit=1000)
    return [(e.actor, e.action, e.address) for e in reversed(found)]


# --- logging in ------------------------------------------------------------------------------


def test_a_login_starts_a_session_whose_id_is_kept_only_as_a_hash(
    accounts: Accounts, engine: Engine
) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, "Firefox/140")
    assert len(login.session_id) >= 40
    assert login.session.user == ZHAO
    assert login.session.expires_at - login.session.created_at == timedelta(hours=12)
    with engine.connect() as connection:
        stored = connection.execute(select(sessions)).mappings().one()
    assert stored["id_sha256"] == session_hash(login.session_id)
    assert login.session_id not in str(dict(stored))
    assert (stored["address"], stored["user_agent"]) == (ADDRESS, "Firefox/140")
    assert accounts.sessions.get(login.session_id) == login.session
    assert actions(accounts)[-1] == ("zhao", "login", ADDRESS)


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer_at_the_same_cost(
    accounts: Accounts, hasher: CountingHasher
) -> None:
    answers = []
    for name, password in (("zhao", "not the passphrase"), ("nobody", PASSWORD), ("zhao", "")):
        before = hasher.verified
        with pytest.raises(LoginRefusedError) as refused:
            accounts.login(name, password, ADDRESS, None)
        answers.append(str(refused.value))
        assert hasher.verified == before + 1, "one argon2 check, whether the user exists or not"
    assert answers == ["wrong user name or password"] * 3
    logged = actions(accounts, action="login_failed")
    assert [actor for actor, _, _ in logged] == ["zhao", NOBODY, "zhao"]
    assert {(action, address) for _, action, address in logged} == {("login_failed", ADDRESS)}


def test_a_revoked_user_and_one_without_a_password_cannot_log_in(accounts: Accounts) -> None:
    accounts.add_user(
        User(name="robot", display_name="robot", role=Role.BUREAU),
        password=None,
        with_token=True,
        actor="cli:root",
    )
    with pytest.raises(LoginRefusedError):
        accounts.login("robot", "", ADDRESS, None)
    accounts.revoke("zhao", actor="cli:root")
    with pytest.raises(LoginRefusedError):
        accounts.login("zhao", PASSWORD, ADDRESS, None)


# --- lock-out --------------------------------------------------------------------------------


def test_failures_of_a_user_lock_it_out_with_a_doubling_wait(
    accounts: Accounts, clock: FakeClock
) -> None:
    def fail() -> None:
        with pytest.raises(LoginRefusedError):
            accounts.login("zhao", "a wrong guess", ADDRESS, None)

    fail()
    fail()
    accounts.login("zhao", PASSWORD, ADDRESS, None)  # below the threshold: a login resets it
    for _ in range(3):
        fail()
    for password in ("a wrong guess", PASSWORD):  # even the right one is refused now
        with pytest.raises(LockedOutError) as locked:
            accounts.login("zhao", password, ADDRESS, None)
        assert locked.value.retry_after == 60
    clock.advance(59)
    with pytest.raises(LockedOutError) as locked:
        accounts.login("zhao", PASSWORD, ADDRESS, None)
    assert locked.value.retry_after == 1
    clock.advance(1)
    fail()  # the fourth failure: the wait doubles
    with pytest.raises(LockedOutError) as locked:
        accounts.login("zhao", PASSWORD, ADDRESS, None)
    assert locked.value.retry_after == 120
    for wait in (120, 240, 480, 600, 600):  # up to lockout_max_s
        clock.advance(wait)
        fail()
        with pytest.raises(LockedOutError) as locked:
            accounts.login("zhao", PASSWORD, "10.9.9.9", None)  # from anywhere
        assert locked.value.retry_after == min(wait * 2, 600)
    clock.advance(600)
    accounts.login("zhao", PASSWORD, ADDRESS, None)  # the wait is over: the right one works
    fail()  # and the count started again
    accounts.login("zhao", PASSWORD, ADDRESS, None)
    logged = {action for _, action, _ in actions(accounts)}
    assert {"locked_out", "login_refused_locked", "login_failed", "login"} <= logged


def test_an_unknown_name_is_locked_out_like_a_real_one(accounts: Accounts) -> None:
    for name in ("zhao", "nobody"):
        for _ in range(3):
            with pytest.raises(LoginRefusedError):
                accounts.login(name, "a wrong guess", f"10.0.0.{len(name)}", None)
        with pytest.raises(LockedOutError) as locked:
            accounts.login(name, PASSWORD, "10.0.0.99", None)
        assert (str(locked.value), locked.value.retry_after) == (
            "too many failed logins: try again in 60 s",
            60,
        )


def test_failures_from_one_address_lock_it_out_for_every_name(
    accounts: Accounts, clock: FakeClock
) -> None:
    for n in range(5):  # five names, each below its own threshold
        with pytest.raises(LoginRefusedError):
            accounts.login(f"guess{n}", "a wrong guess", ADDRESS, None)
    with pytest.raises(LockedOutError):
        accounts.login("zhao", PASSWORD, ADDRESS, None)
    accounts.login("zhao", PASSWORD, "10.1.2.4", None)  # from elsewhere: in
    clock.advance(60)
    accounts.login("zhao", PASSWORD, ADDRESS, None)


def test_failures_are_forgotten_after_a_quiet_while(accounts: Accounts, clock: FakeClock) -> None:
    for _ in range(2):
        with pytest.raises(LoginRefusedError):
            accounts.login("zhao", "a wrong guess", ADDRESS, None)
    clock.advance(24 * 3600)
    with pytest.raises(LoginRefusedError):
        accounts.login("zhao", "a wrong guess", ADDRESS, None)  # counts as the first again
    accounts.login("zhao", PASSWORD, ADDRESS, None)


def test_the_wait_grows_by_doubling_to_the_most() -> None:
    policy = LockoutPolicy(user_failures=5, base=timedelta(minutes=1), most=timedelta(hours=1))
    waits = [policy.wait(n, 5) for n in range(1, 13)]
    assert waits[:4] == [None] * 4
    assert [w.total_seconds() if w else None for w in waits[4:]] == [
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]
    assert policy.wait(10**6, 5) == timedelta(hours=1)
    assert Key("user", "zhao").digest != Key("address", "zhao").digest
    assert "zhao" not in Key("user", "zhao").digest


def test_an_admin_unlocks_a_user(accounts: Accounts) -> None:
    for _ in range(3):
        with pytest.raises(LoginRefusedError):
            accounts.login("zhao", "a wrong guess", ADDRESS, None)
    accounts.unlock("zhao", actor="cli:root")
    accounts.login("zhao", PASSWORD, "10.0.0.7", None)


# --- sessions --------------------------------------------------------------------------------


def test_a_session_ends_after_its_idle_timeout(accounts: Accounts, clock: FakeClock) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, None)
    for _ in range(5):  # used every 29 minutes: alive for hours
        clock.advance(29 * 60)
        assert accounts.sessions.get(login.session_id) is not None
    clock.advance(29 * 60)
    assert accounts.sessions.get(login.session_id, touch=False) is not None
    clock.advance(60)  # 30 minutes since the last use (a look without touching is none)
    assert accounts.sessions.get(login.session_id) is None


def test_a_session_ends_at_its_absolute_timeout_however_used(
    accounts: Accounts, clock: FakeClock
) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, None)
    for _ in range(12 * 4 - 1):
        clock.advance(15 * 60)
        assert accounts.sessions.get(login.session_id) is not None
    clock.advance(15 * 60)  # 12 h after the login
    assert accounts.sessions.get(login.session_id) is None
    assert accounts.sessions.get("not a session id") is None


def test_use_is_written_back_at_most_every_minute(
    accounts: Accounts, clock: FakeClock, engine: Engine
) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, None)

    def stored() -> object:
        with engine.connect() as connection:
            return connection.execute(select(sessions.c.last_seen_at)).scalar_one()

    start = stored()
    clock.advance(30)
    assert accounts.sessions.get(login.session_id) is not None
    assert stored() == start
    clock.advance(30)
    assert accounts.sessions.get(login.session_id) is not None
    assert stored() == clock.now()


def test_logout_ends_the_session(accounts: Accounts) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, None)
    assert accounts.logout(login.session_id, ADDRESS) == login.session
    assert accounts.sessions.get(login.session_id) is None
    assert accounts.logout(login.session_id, ADDRESS) is None
    assert actions(accounts)[-1] == ("zhao", "logout", ADDRESS)


def test_a_revoked_user_s_sessions_end_at_once(accounts: Accounts, engine: Engine) -> None:
    first = accounts.login("zhao", PASSWORD, ADDRESS, None)
    second = accounts.login("zhao", PASSWORD, ADDRESS, None)
    # As the CLI of another process does it: only the users table changes...
    from core.users import UserStore

    UserStore(engine).revoke("zhao")
    assert accounts.sessions.get(first.session_id) is None, "every look-up reads `disabled`"
    accounts.revoke("zhao", actor="cli:root")  # ...and through Accounts the rows go too
    assert accounts.sessions.get(second.session_id) is None
    with engine.connect() as connection:
        assert connection.execute(select(sessions)).all() == []


def test_the_database_away_lets_a_recent_session_in_and_refuses_others(
    engine: Engine, clock: FakeClock, hasher: CountingHasher
) -> None:
    away = [False]
    accounts = Accounts(
        engine, AuthSettings(), clock=clock, passwords=Passwords(hasher), away=lambda: away[0]
    )
    accounts.add_user(ZHAO, password=PASSWORD, with_token=False, actor="cli:root")
    login = accounts.login("zhao", PASSWORD, ADDRESS, None)
    away[0] = True
    clock.advance(600)
    assert accounts.sessions.get(login.session_id) == login.session
    from core.db import DatabaseUnavailableError

    with pytest.raises(DatabaseUnavailableError):
        accounts.sessions.get("a session this process has not seen")
    clock.advance(31 * 60)  # idle even while away
    assert accounts.sessions.get(login.session_id) is None


def test_the_csrf_token_belongs_to_its_session() -> None:
    token = csrf_token("session one")
    assert len(token) == 64 and token == csrf_token("session one")
    assert token != csrf_token("session two")
    assert token != session_hash("session one"), "not what the database holds"
    assert csrf_matches("session one", token)
    assert not csrf_matches("session two", token)
    assert not csrf_matches("session one", None) and not csrf_matches("session one", "")
    assert not csrf_matches("session one", token[:-1])


# --- passwords -------------------------------------------------------------------------------


def test_a_password_change_ends_the_other_sessions(accounts: Accounts) -> None:
    here = accounts.login("zhao", PASSWORD, ADDRESS, None)
    there = accounts.login("zhao", PASSWORD, "10.7.7.7", None)
    with pytest.raises(WrongPasswordError):
        accounts.change_password(here.session, "not it at all", "a brand new passphrase", ADDRESS)
    with pytest.raises(PasswordRuleError, match="at least 12"):
        accounts.change_password(here.session, PASSWORD, "too short", ADDRESS)
    with pytest.raises(PasswordRuleError, match="differ"):
        accounts.change_password(here.session, PASSWORD, PASSWORD, ADDRESS)
    assert accounts.change_password(here.session, PASSWORD, "a brand new passphrase", ADDRESS) == 1
    assert accounts.sessions.get(here.session_id) is not None
    assert accounts.sessions.get(there.session_id) is None
    with pytest.raises(LoginRefusedError):
        accounts.login("zhao", PASSWORD, ADDRESS, None)
    accounts.login("zhao", "a brand new passphrase", ADDRESS, None)
    logged = [a for _, a, _ in actions(accounts, actor="zhao")]
    assert "password_change_failed" in logged and "password_changed" in logged


def test_wrong_current_passwords_count_towards_the_lock_out(accounts: Accounts) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, None)
    for _ in range(3):
        with pytest.raises(WrongPasswordError):
            accounts.change_password(
                login.session, "a wrong guess", "a brand new passphrase", ADDRESS
            )
    with pytest.raises(LockedOutError):
        accounts.change_password(login.session, PASSWORD, "a brand new passphrase", ADDRESS)


def test_an_admin_reset_ends_every_session_and_the_lock_out(accounts: Accounts) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, None)
    for _ in range(3):
        with pytest.raises(LoginRefusedError):
            accounts.login("zhao", "a wrong guess", "10.0.0.8", None)
    assert accounts.reset_password("zhao", "set by the admin!", actor="cli:root") == 1
    assert accounts.sessions.get(login.session_id) is None
    accounts.login("zhao", "set by the admin!", "10.0.0.9", None)


# --- the audit log ---------------------------------------------------------------------------


def test_the_audit_log_never_holds_a_secret(accounts: Accounts, engine: Engine) -> None:
    login = accounts.login("zhao", PASSWORD, ADDRESS, "Firefox")
    with pytest.raises(LoginRefusedError):
        accounts.login("zhao", "a secret wrong guess", ADDRESS, None)
    accounts.change_password(login.session, PASSWORD, "a brand new passphrase", ADDRESS)
    token = accounts.rotate_token("zhao", grace=timedelta(0), actor="cli:root")
    accounts.audit.record("zhao", "test", detail={"password": "x", "nested": [{"new_token": "y"}]})
    accounts.audit.flush()
    with engine.connect() as connection:
        text = str(connection.exec_driver_sql("SELECT * FROM audit_log").all())
    for secret in (PASSWORD, "a secret wrong guess", "a brand new passphrase", token):
        assert secret not in text
    assert login.session_id not in text and csrf_token(login.session_id) not in text
    assert scrub({"password": "x", "nested": [{"new_token": "y"}], "old": 1, "note": "ok"}) == {
        "password": HIDDEN,
        "nested": [{"new_token": HIDDEN}],
        "old": HIDDEN,
        "note": "ok",
    }


def test_entries_wait_while_the_database_is_away_and_are_written_after(
    tmp_path: Path, engine: Engine, clock: FakeClock
) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")  # no tables: every write fails
    audit = AuditLog(broken, clock)
    audit.record("zhao", "alert_acknowledged", "alert:1", ADDRESS, {"note": "on my way"})
    with pytest.raises(OperationalError, match="no such table"):
        audit.flush()
    assert audit.pending == 1
    audit._engine = engine  # the database is back
    assert audit.flush() == 1 and audit.pending == 0
    (entry,) = audit.search(AuditQuery())
    assert (entry.actor, entry.action, entry.object, entry.detail) == (
        "zhao",
        "alert_acknowledged",
        "alert:1",
        {"note": "on my way"},
    )
    assert entry.at == clock.now(), "stamped when it happened, not when written"


def test_the_audit_log_is_searched_by_actor_action_and_time(
    engine: Engine, clock: FakeClock
) -> None:
    audit = AuditLog(engine, clock)
    start = clock.now()
    for n in range(5):
        audit.record("zhao" if n % 2 else "li", "login" if n < 3 else "logout", address=ADDRESS)
        clock.advance(60)
    audit.flush()
    assert audit.count(AuditQuery()) == 5
    assert [e.actor for e in audit.search(AuditQuery(actor="zhao"))] == ["zhao", "zhao"]
    assert audit.count(AuditQuery(action="logout")) == 2
    window = AuditQuery(since=start + timedelta(minutes=1), before=start + timedelta(minutes=3))
    assert [e.at for e in audit.search(window)] == [
        start + timedelta(minutes=2),
        start + timedelta(minutes=1),
    ]
    assert len(audit.search(AuditQuery(), limit=2, offset=4)) == 1

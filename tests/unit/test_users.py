"""API users: tokens kept only as hashes, roles, the institutions each sees."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from core.clock import FakeClock
from core.db import make_engine, upgrade
from core.users import (
    ADMIN,
    Role,
    User,
    UserError,
    UserStore,
    token_hash,
    users,
    visible_institutions,
)


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    return UserStore(make_engine(url))


def user(name: str, role: Role, **scope: tuple[str, ...]) -> User:
    return User(name=name, display_name=name.title(), role=role, **scope)


def test_a_token_finds_its_user_and_only_its_hash_is_stored(store: UserStore) -> None:
    wang = user("wang", Role.CONTRACTOR, institutions=("inst-1",))
    token = store.add(wang)
    assert len(token) >= 40
    assert store.by_token(token) == wang
    assert store.by_token(token + "x") is None
    with store._engine.connect() as connection:
        stored = connection.execute(select(users.c.token_sha256)).scalar()
    assert stored == token_hash(token) and token not in str(stored)


def test_a_revoked_user_is_refused(store: UserStore) -> None:
    token = store.add(user("zhao", Role.DUTY_OFFICER))
    assert store.by_token(token) is not None
    assert store.revoke("zhao") and not store.revoke("nobody")
    assert store.by_token(token) is None
    assert store.list() == [(user("zhao", Role.DUTY_OFFICER), True)]


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (user("admin", Role.ADMIN), "bootstrap"),
        (user("li", Role.TOWN_OFFICE), "at least one town"),
        (user("wang", Role.INSTITUTION), "at least one institution"),
        (user("wang", Role.CONTRACTOR), "at least one institution"),
    ],
)
def test_users_that_cannot_work_are_refused(store: UserStore, new: User, message: str) -> None:
    with pytest.raises(UserError, match=message):
        store.add(new)


def test_a_name_is_taken_once(store: UserStore) -> None:
    store.add(user("zhao", Role.DUTY_OFFICER))
    with pytest.raises(UserError, match="exists already"):
        store.add(user("zhao", Role.BUREAU))


def towns(names: Iterable[str]) -> list[str]:
    by_town = {"城关镇": ["inst-1", "inst-3"], "东城街道": ["inst-2"]}
    return [i for town in names for i in by_town.get(town, [])]


def test_what_each_role_sees_and_may_do() -> None:
    for role in (Role.ADMIN, Role.DUTY_OFFICER, Role.BUREAU):
        assert visible_institutions(user("x", role), towns) is None
    town = user("li", Role.TOWN_OFFICE, towns=("城关镇",))
    assert visible_institutions(town, towns) == ["inst-1", "inst-3"]
    home = user("wu", Role.INSTITUTION, institutions=("inst-2",))
    assert visible_institutions(home, towns) == ["inst-2"]
    assert ADMIN.may_act and ADMIN.may_acknowledge
    assert not user("boss", Role.BUREAU).may_act
    assert not user("wang", Role.CONTRACTOR, institutions=("inst-1",)).may_acknowledge
    assert home.may_acknowledge and town.may_act and not town.may_acknowledge


# --- passwords and tokens with an expiry and a rotation ------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed(tmp_path: Path, clock: FakeClock) -> UserStore:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    return UserStore(make_engine(url), clock=clock)


def test_a_person_may_have_a_password_and_no_token(timed: UserStore) -> None:
    zhao = user("zhao", Role.DUTY_OFFICER)
    assert timed.create(zhao, password_hash="$argon2id$stored", with_token=False) is None
    li = user("li", Role.TOWN_OFFICE, towns=("城关镇",))
    assert timed.create(li, password_hash="$argon2id$other", with_token=False) is None
    assert timed.credentials("zhao") == (zhao, "$argon2id$stored")
    assert timed.credentials("nobody") is None
    account = {a.user.name: a for a in timed.accounts()}["zhao"]
    assert account.has_password and account.token_expires_at is None
    timed.revoke("zhao")
    assert timed.credentials("zhao") is None, "a revoked user has no credentials to check"
    assert not timed.set_password("zhao", "$argon2id$new")
    with pytest.raises(UserError, match="needs a password or a token"):
        timed.create(user("wu", Role.BUREAU), password_hash=None, with_token=False)


def test_a_token_expires_after_its_days_cached_or_not(timed: UserStore, clock: FakeClock) -> None:
    token = timed.add(user("robot", Role.BUREAU), token_days=2)
    assert timed.by_token(token) is not None
    clock.advance(2 * 86400 - 1)
    assert timed.by_token(token) is not None  # from the cache, still valid
    clock.advance(1)
    assert timed.by_token(token) is None, "expired, though the look-up is cached"
    timed._forget()
    assert timed.by_token(token) is None, "expired in the database too"
    (account,) = timed.accounts()
    assert account.token_expires_at == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def test_a_rotated_token_replaces_the_old_one_at_once(timed: UserStore, clock: FakeClock) -> None:
    old = timed.add(user("robot", Role.BUREAU))
    assert timed.by_token(old) is not None
    new = timed.rotate_token("robot", token_days=30)
    assert new != old
    assert timed.by_token(old) is None, "the old token stops working at once"
    assert timed.by_token(new) == user("robot", Role.BUREAU)
    clock.advance(30 * 86400)
    timed._forget()
    assert timed.by_token(new) is None, "the new token has its own expiry"


def test_a_grace_period_keeps_the_old_token_for_a_while(timed: UserStore, clock: FakeClock) -> None:
    old = timed.add(user("robot", Role.BUREAU))
    new = timed.rotate_token("robot", grace=timedelta(hours=2))
    assert timed.by_token(old) is not None and timed.by_token(new) is not None
    (account,) = timed.accounts()
    assert account.previous_token_until == clock.now() + timedelta(hours=2)
    clock.advance(2 * 3600)
    assert timed.by_token(old) is None, "the grace is over"
    assert timed.by_token(new) is not None
    newest = timed.rotate_token("robot", grace=timedelta(hours=1))
    assert timed.by_token(new) is not None and timed.by_token(newest) is not None
    assert timed.by_token(old) is None, "only the token just replaced has a grace"
    with pytest.raises(UserError, match="between 0 and 7 days"):
        timed.rotate_token("robot", grace=timedelta(days=8))
    timed.revoke("robot")
    assert timed.by_token(new) is None and timed.by_token(newest) is None
    with pytest.raises(UserError, match="no user 'robot'"):
        timed.rotate_token("robot")


def test_tokens_of_before_the_upgrade_expire_a_year_after_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url, "0007")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            insert(users).values(
                name="old",
                display_name="Old",
                role="bureau",
                institutions=[],
                towns=[],
                token_sha256=token_hash("an old token of before"),
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                disabled=False,
            )
        )
    upgrade(url)
    (account,) = UserStore(engine).accounts()
    assert account.token_expires_at is not None
    left = account.token_expires_at - datetime.now(UTC)
    assert timedelta(days=364) < left <= timedelta(days=365)
    assert UserStore(engine).by_token("an old token of before") is not None

"""API users: tokens kept only as hashes, roles, the institutions each sees."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from sqlalchemy import select

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

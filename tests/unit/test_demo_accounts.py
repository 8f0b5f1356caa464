"""The demo's users: one per role of the workflow, a fresh password at every start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pwdlib.hashers.argon2 import Argon2Hasher

from core.accounts import Accounts, LoginRefusedError
from core.db import make_engine, upgrade
from core.passwords import Passwords
from core.users import Role, User
from hazardwatch.demo_accounts import ensure_demo_accounts, make_password
from simulators.district import district_fleet_spec

SPEC = district_fleet_spec(4, 40)


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    url = f"sqlite:///{tmp_path / 'users.sqlite'}"
    upgrade(url)
    cheap = Passwords(Argon2Hasher(time_cost=1, memory_cost=64, parallelism=1))
    return Accounts(make_engine(url), passwords=cheap)


def test_passwords_are_long_enough_readable_and_random() -> None:
    drawn = {make_password() for _ in range(50)}
    assert len(drawn) == 50
    assert all(re.fullmatch(r"[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}", p) for p in drawn)
    assert not any(set(p) & set("01loI") for p in drawn)


def test_each_role_of_the_workflow_logs_in_with_its_scope(accounts: Accounts) -> None:
    logins = ensure_demo_accounts(accounts, SPEC)
    roles = {login.user.role for login in logins}
    assert {Role.DUTY_OFFICER, Role.INSTITUTION, Role.TOWN_OFFICE} <= roles
    home = SPEC.institutions[0]
    for login in logins:
        assert login.password is not None and login.role_zh and login.role_en
        done = accounts.login(login.user.name, login.password, "127.0.0.1", None)
        assert done.session.user == login.user
    by_role = {login.user.role: login.user for login in logins}
    assert by_role[Role.INSTITUTION].institutions == (home.id,)
    assert by_role[Role.TOWN_OFFICE].towns == (home.town,)


def test_a_new_start_gives_new_passwords_and_leaves_other_users_alone(
    accounts: Accounts,
) -> None:
    theirs = User(name="town", display_name="someone's own", role=Role.BUREAU)
    accounts.add_user(theirs, password="their own password", with_token=False, actor="test")
    first = {login.user.name: login.password for login in ensure_demo_accounts(accounts, SPEC)}
    again = {login.user.name: login.password for login in ensure_demo_accounts(accounts, SPEC)}
    assert first["town"] is None and again["town"] is None
    accounts.login("town", "their own password", None, None)  # unchanged
    duty_before, duty_now = first["duty"], again["duty"]
    assert duty_before and duty_now and duty_before != duty_now
    accounts.login("duty", duty_now, None, None)
    with pytest.raises(LoginRefusedError):
        accounts.login("duty", duty_before, None, None)

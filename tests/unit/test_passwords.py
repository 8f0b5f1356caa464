"""Passwords: argon2id hashes through pwdlib, the rules of a new password, the dummy check."""

from __future__ import annotations

import pytest
from pwdlib.hashers.argon2 import Argon2Hasher

from core.passwords import MAX_LENGTH, PasswordRuleError, Passwords, check_new_password

CHEAP = Argon2Hasher(time_cost=1, memory_cost=64, parallelism=1)


class CountingHasher(Argon2Hasher):
    """A cheap argon2id hasher that counts its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=64, parallelism=1)
        self.verified = 0

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        self.verified += 1
        return super().verify(password, hash)


def test_a_password_is_kept_as_an_argon2id_hash_that_only_it_matches() -> None:
    passwords = Passwords()  # the service's own parameters
    stored = passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert "correct horse battery" not in stored
    assert passwords.verify("correct horse battery", stored) == (True, None)
    assert passwords.verify("correct horse batterY", stored) == (False, None)
    assert passwords.hash("correct horse battery") != stored  # salted


def test_no_stored_hash_costs_a_hash_all_the_same_and_never_matches() -> None:
    hasher = CountingHasher()
    passwords = Passwords(hasher)
    assert passwords.verify("anything at all", None) == (False, None)
    assert passwords.verify("", None) == (False, None)
    assert passwords.verify("x", "not a hash we know") == (False, None)
    assert hasher.verified == 3  # each against the dummy, as long as a real check


def test_a_hash_of_older_parameters_is_replaced_at_the_next_login() -> None:
    old = Passwords(CHEAP).hash("correct horse battery")
    ok, new = Passwords().verify("correct horse battery", old)
    assert ok and new is not None and new.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert Passwords().verify("wrong horse battery", old) == (False, None)


@pytest.mark.parametrize(
    ("name", "password", "reason"),
    [
        ("zhao", "short pass", "at least 12 characters"),
        ("zhao", "x" * (MAX_LENGTH + 1), f"at most {MAX_LENGTH} characters"),
        ("zhao.wei@home-1", "Zhao.Wei@Home-1", "must not be the user name"),
        ("zhao.wei@home-1", " zhao.wei@home-1 ", "must not be the user name"),
        ("zhao", " " * 20, "only spaces"),
    ],
)
def test_a_new_password_must_meet_the_rules(name: str, password: str, reason: str) -> None:
    with pytest.raises(PasswordRuleError, match=reason):
        check_new_password(name, password, 12)


def test_the_rules_let_a_good_password_through_and_the_length_is_a_setting() -> None:
    check_new_password("zhao", "消防值班室的口令很长很长", 12)  # 12 characters, not bytes
    check_new_password("zhao", "zhao zhao zhao", 12)  # contains the name: not equal to it
    with pytest.raises(PasswordRuleError, match="at least 16"):
        check_new_password("zhao", "fifteen chars!!", 16)

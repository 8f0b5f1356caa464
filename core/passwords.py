"""Passwords of people: argon2id hashes (pwdlib), and the rules a new password must meet.

Only the hash is stored (`users.password_hash`, PHC string: algorithm, parameters, salt and
digest). Checking a password for a user who does not exist, is revoked or has no password
hashes it against a dummy hash of the same cost: the answer and its timing do not tell
whether the user exists.
"""

from __future__ import annotations

import secrets

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from core.errors import HazardwatchError

MAX_LENGTH = 1024  # characters: any passphrase fits, and no one makes us hash a megabyte


class PasswordRuleError(HazardwatchError):
    """A new password does not meet the rules (the message says which)."""


def check_new_password(name: str, password: str, min_length: int) -> None:
    """Raise PasswordRuleError unless `password` may be `name`'s new password."""
    if len(password) < min_length:
        raise PasswordRuleError(f"a password has at least {min_length} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRuleError(f"a password has at most {MAX_LENGTH} characters")
    if not password.strip():
        raise PasswordRuleError("the password must not be only spaces")
    if password.strip().casefold() == name.casefold():
        raise PasswordRuleError("the password must not be the user name")


class Passwords:
    """Hashes and checks passwords with argon2id (pwdlib's defaults: RFC 9106's second
    recommended option, 64 MiB, 3 passes, 4 lanes; tests pass a cheaper hasher)."""

    def __init__(self, hasher: Argon2Hasher | None = None) -> None:
        self._hash = PasswordHash((hasher or Argon2Hasher(),))
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        """The PHC string to store."""
        return self._hash.hash(password)

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """Whether `password` matches `stored`, and a new hash to store when the stored one
        was made with other parameters (or None). `stored` None (no such user, or no
        password): a dummy of the same cost is checked, and the answer is no."""
        if stored is None:
            self._hash.verify(password, self._dummy_hash())
            return False, None
        try:
            return self._hash.verify_and_update(password, stored)
        except UnknownHashError:  # not ours: as if there were none
            self._hash.verify(password, self._dummy_hash())
            return False, None

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self._hash.hash(secrets.token_urlsafe(24))
        return self._dummy

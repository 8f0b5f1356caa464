"""The demo's people: one login per role of the workflow, with a password made at each start."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from core.accounts import Accounts
from core.users import Role, User, UserError
from simulators.registry import FleetSpec

ACTOR: Final = "demo"
# No 0/O, 1/l/I: read off a terminal and typed into a login form.
_ALPHABET: Final = "abcdefghjkmnpqrstuvwxyz23456789"


@dataclass(frozen=True, slots=True)
class DemoLogin:
    """A demo account as the banner shows it."""

    role_zh: str
    role_en: str
    user: User
    password: str | None  # None: the name is taken by a user the demo did not make


def make_password(groups: int = 3, size: int = 4) -> str:
    """A random password like `k7wm-p2xq-9fhz` (14 characters, about 59 bits)."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(size)) for _ in range(groups))


def demo_users(spec: FleetSpec) -> list[tuple[str, str, User]]:
    """Who shows the workflow: the duty desk, the first institution, its town, the bureau, the
    maintenance contractor of every institution."""
    home = spec.institutions[0]
    town = home.town
    every = tuple(i.id for i in spec.institutions)
    return [
        (
            "值班员",
            "duty officer",
            User(name="duty", display_name="区民政局值班员", role=Role.DUTY_OFFICER),
        ),
        (
            f"机构用户({home.name})",
            f"institution user ({home.id})",
            User(
                name="home",
                display_name=f"{home.name}安全管理员",
                role=Role.INSTITUTION,
                institutions=(home.id,),
            ),
        ),
        (
            f"街道民政所({town})",
            f"town office ({town})",
            User(name="town", display_name=f"{town}民政所", role=Role.TOWN_OFFICE, towns=(town,)),
        ),
        (
            "区民政局(只读、报表)",
            "bureau (reads, reports)",
            User(name="bureau", display_name="区民政局", role=Role.BUREAU),
        ),
        (
            "维保单位",
            "maintenance contractor",
            User(
                name="contractor",
                display_name="消防设施维保单位",
                role=Role.CONTRACTOR,
                institutions=every,
            ),
        ),
    ]


def ensure_demo_accounts(accounts: Accounts, spec: FleetSpec) -> list[DemoLogin]:
    """Add each demo user, or give an existing one of the same role a new password."""
    logins = []
    for role_zh, role_en, user in demo_users(spec):
        logins.append(DemoLogin(role_zh, role_en, user, _give_password(accounts, user)))
    accounts.audit.flush()
    return logins


def _give_password(accounts: Accounts, user: User) -> str | None:
    password = make_password()
    found = accounts.users.credentials(user.name)
    try:
        if found is None:
            accounts.add_user(user, password=password, with_token=False, actor=ACTOR)
        elif found[0].role is user.role:
            accounts.reset_password(user.name, password, actor=ACTOR)
        else:  # someone's own user of that name: not the demo's to change
            return None
    except UserError:  # revoked, or added meanwhile by someone else: leave it alone
        return None
    return password

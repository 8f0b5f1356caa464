"""People's accounts, for admins: list, add, reset a password, revoke (docs/access.md).

What the command line (`hazardwatch user …`) does, through the API, for the console's admin
page. Only `admin` may; every change is in the audit log with who did it and from where. A
new account's institutions must exist (every object a request names is checked); an admin
cannot revoke their own account (the last way in could go with it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ContextDep, CurrentUser, NeedsDatabase, client_address, require
from api.schemas import REFUSAL, Text
from core.accounts import Accounts
from core.passwords import MAX_LENGTH, PasswordRuleError
from core.users import Role, User, UserError

router = APIRouter(
    prefix="/api/v1/users", tags=["users"], dependencies=[NeedsDatabase], responses=REFUSAL
)

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


class AccountPublic(BaseModel):
    """A person's account as an admin sees it: never a secret, only what exists."""

    name: str
    display_name: str
    role: Role
    institutions: list[str]
    towns: list[str]
    disabled: bool
    has_password: bool
    token_expires_at: datetime | None = Field(description="None: no API token")


class AccountNew(BaseModel):
    """A new account: a password to log in with, an API token for a machine, or both."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, description="login name")
    display_name: Text = Field(min_length=1, max_length=100)
    role: Role
    institutions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=200, description="for institution and contractor"
    )
    towns: list[Annotated[Text, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=50, description="for town_office"
    )
    password: str | None = Field(default=None, max_length=MAX_LENGTH)
    token: bool = Field(default=False, description="also an API token (shown once)")


class AccountMade(BaseModel):
    """The account made, and its API token if one was asked for (shown this once)."""

    account: AccountPublic
    token: str | None


class PasswordReset(BaseModel):
    """An admin's new password for someone (their sessions end)."""

    model_config = ConfigDict(extra="forbid")
    password: str = Field(max_length=MAX_LENGTH)


class ResetDone(BaseModel):
    sessions_ended: int


def _admin(context: ContextDep, user: CurrentUser) -> Accounts:
    require(user.role is Role.ADMIN, f"a {user.role} user cannot manage accounts")
    if context.accounts is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "accounts are not set up")
    return context.accounts


AdminAccounts = Annotated[Accounts, Depends(_admin)]


def _public(accounts: Accounts, name: str) -> AccountPublic:
    for account in accounts.users.accounts():
        if account.user.name == name:
            user = account.user
            return AccountPublic(
                name=user.name,
                display_name=user.display_name,
                role=user.role,
                institutions=list(user.institutions),
                towns=list(user.towns),
                disabled=account.disabled,
                has_password=account.has_password,
                token_expires_at=account.token_expires_at,
            )
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {name!r}")


@router.get("")
def list_users(accounts: AdminAccounts) -> list[AccountPublic]:
    """Every account, revoked ones too."""
    return [
        AccountPublic(
            name=a.user.name,
            display_name=a.user.display_name,
            role=a.user.role,
            institutions=list(a.user.institutions),
            towns=list(a.user.towns),
            disabled=a.disabled,
            has_password=a.has_password,
            token_expires_at=a.token_expires_at,
        )
        for a in accounts.users.accounts()
    ]


@router.post("", status_code=status.HTTP_201_CREATED)
def add_user(
    body: AccountNew,
    request: Request,
    context: ContextDep,
    user: CurrentUser,
    accounts: AdminAccounts,
) -> AccountMade:
    """A new account; 409 if the name is taken, 422 with the reason for a bad one."""
    missing = [i for i in body.institutions if context.registry.institution(i) is None]
    if missing:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"no institution {', '.join(missing)}"
        )
    if body.password is None and not body.token:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "give a password, ask for a token, or both"
        )
    new = User(
        name=body.name,
        display_name=body.display_name,
        role=body.role,
        institutions=tuple(body.institutions),
        towns=tuple(body.towns),
    )
    try:
        token = accounts.add_user(
            new,
            password=body.password,
            with_token=body.token,
            actor=user.name,
            address=client_address(request),
        )
    except PasswordRuleError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except UserError as exc:
        code = status.HTTP_409_CONFLICT if "exists already" in str(exc) else 422
        raise HTTPException(code, str(exc)) from None
    return AccountMade(account=_public(accounts, new.name), token=token)


@router.post("/{name}/password")
def reset_password(
    name: str,
    body: PasswordReset,
    request: Request,
    user: CurrentUser,
    accounts: AdminAccounts,
) -> ResetDone:
    """Set someone's password (they forgot it): every session of theirs ends."""
    try:
        ended = accounts.reset_password(
            name, body.password, actor=user.name, address=client_address(request)
        )
    except PasswordRuleError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except UserError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return ResetDone(sessions_ended=ended)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_user(
    name: str, request: Request, user: CurrentUser, accounts: AdminAccounts
) -> Response:
    """Revoke an account: its token and sessions stop at once (again: no change)."""
    if name == user.name:
        raise HTTPException(status.HTTP_409_CONFLICT, "an admin cannot revoke their own account")
    if not accounts.revoke(name, actor=user.name, address=client_address(request)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {name!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)

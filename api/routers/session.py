"""Logging in and out, who am I, changing one's password (docs/access.md#logging-in).

The session id travels in an HttpOnly cookie (JavaScript cannot read it), SameSite=Strict
(no other site's page can make the browser send it), Path=/, Secure when the login came over
HTTPS (`[auth] cookie_secure`), named `__Host-hw_session` then. It lasts until the session's
absolute end; the idle timeout is the server's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import (
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    Caller,
    ContextDep,
    CurrentCaller,
    client_address,
    scope,
)
from core.accounts import (
    Accounts,
    LockedOutError,
    LoginBusyError,
    LoginRefusedError,
    WrongPasswordError,
)
from core.passwords import MAX_LENGTH, PasswordRuleError
from core.users import Role

router = APIRouter(prefix="/api/v1/session", tags=["session"])


class LoginBody(BaseModel):
    """A login."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(max_length=MAX_LENGTH)


class PasswordChange(BaseModel):
    """A change of one's own password."""

    model_config = ConfigDict(extra="forbid")
    old: str = Field(max_length=MAX_LENGTH, description="the current password")
    new: str = Field(max_length=MAX_LENGTH, description="at least [auth] password_min_length")


class UserPublic(BaseModel):
    """Who a user is and what their role lets them see."""

    name: str
    display_name: str
    role: Role
    institutions: list[str] = Field(description="named institutions (institution, contractor)")
    towns: list[str] = Field(description="towns (town_office)")


class WhoAmI(BaseModel):
    """The caller, how they got in, and what they see."""

    user: UserPublic
    auth: Literal["session", "token"]
    csrf_token: str | None = Field(
        description="session only: send it as the X-CSRF-Token header with every change "
        "(POST, PUT, PATCH, DELETE)"
    )
    expires_at: datetime | None = Field(description="session only: its absolute end")
    idle_timeout_s: int | None = Field(description="session only: it ends unused this long")
    visible_institutions: list[str] | None = Field(description="the institutions seen; null: all")


def _accounts(context: ContextDep) -> Accounts:
    if context.accounts is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "logins are not set up")
    return context.accounts


def _who(context: ContextDep, caller: Caller) -> WhoAmI:
    user = caller.user
    session = caller.session
    idle = context.accounts.sessions.idle if context.accounts is not None else None
    return WhoAmI(
        user=UserPublic(
            name=user.name,
            display_name=user.display_name,
            role=user.role,
            institutions=list(user.institutions),
            towns=list(user.towns),
        ),
        auth="session" if session is not None else "token",
        csrf_token=caller.csrf_token,
        expires_at=session.expires_at if session is not None else None,
        idle_timeout_s=int(idle.total_seconds()) if session is not None and idle else None,
        visible_institutions=scope(context, user),
    )


def _secure(accounts: Accounts, request: Request) -> bool:
    setting = accounts.settings.cookie_secure
    return setting == "always" or (setting == "auto" and request.url.scheme == "https")


@router.post(
    "",
    responses={
        401: {"description": "wrong user name or password"},
        429: {"description": "too many failed logins: wait Retry-After seconds"},
    },
)
def login(
    body: LoginBody,
    request: Request,
    response: Response,
    context: ContextDep,
    user_agent: Annotated[str | None, Header()] = None,
) -> WhoAmI:
    """Log in with a user name and password: a session cookie, and the CSRF token its changes
    must send. No credentials needed (the one route so); JSON only."""
    accounts = _accounts(context)
    if context.database is not None:
        context.database.check()
    try:
        done = accounts.login(body.username, body.password, client_address(request), user_agent)
    except LockedOutError as exc:
        raise _locked_out(exc) from None
    except LoginRefusedError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from None
    except LoginBusyError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None
    secure = _secure(accounts, request)
    session = done.session
    response.set_cookie(
        SECURE_SESSION_COOKIE if secure else SESSION_COOKIE,
        done.session_id,
        max_age=max(1, int((session.expires_at - session.created_at).total_seconds())),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return _who(context, Caller(session.user, session_id=done.session_id, session=session))


@router.get("")
def who_am_i(context: ContextDep, caller: CurrentCaller, response: Response) -> WhoAmI:
    """Who is logged in (or whose token this is), their role, what they see; for a session
    its CSRF token."""
    response.headers["Cache-Control"] = "no-store"
    return _who(context, caller)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def logout(context: ContextDep, caller: CurrentCaller, request: Request) -> Response:
    """Log out: the session ends, the cookie is cleared (a token's caller: nothing to do)."""
    answer = Response(status_code=status.HTTP_204_NO_CONTENT)
    if caller.session_id is not None:
        _accounts(context).logout(caller.session_id, client_address(request))
        answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        answer.delete_cookie(
            SECURE_SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
    return answer


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        403: {"description": "the current password is wrong, or the caller has no session"},
        422: {"description": "the new password does not meet the rules"},
        429: {"description": "too many failed attempts: wait Retry-After seconds"},
    },
)
def change_password(
    body: PasswordChange, context: ContextDep, caller: CurrentCaller, request: Request
) -> Response:
    """Change one's own password, giving the current one; one's other sessions end (this one
    goes on). Only in a session: a token cannot change a password."""
    accounts = _accounts(context)
    if caller.session is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "a password is changed in a session (log in with it): a token cannot change it",
        )
    try:
        accounts.change_password(caller.session, body.old, body.new, client_address(request))
    except WrongPasswordError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except PasswordRuleError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except LockedOutError as exc:
        raise _locked_out(exc) from None
    except LoginBusyError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _locked_out(exc: LockedOutError) -> HTTPException:
    """429 with the reason and when to try again."""
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after)}
    )

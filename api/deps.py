"""What the HTTP API needs from the rest of the service, passed in explicitly."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from alerts.stage import AlertStage
from api.streams import StreamSlots
from core.accounts import Accounts
from core.db import DatabaseUnavailableError, DatabaseWatch
from core.health import Health
from core.ports import EventLog, ReadingsSource
from core.registry.repository import RegistryRepository
from core.sessions import Session, csrf_matches, csrf_token
from core.settings import DisplaySettings
from core.users import ADMIN, User, UserStore, visible_institutions
from ingest.deadletters import DeadLetterStore
from ingest.presence import Presence
from tickets.stage import TicketStage

ReadinessCheck = Callable[[], bool]


@dataclass
class ApiContext:
    """Dependencies of the app; built by the composition root."""

    admin_token: str | None  # None: none was configured, or it is revoked
    registry: RegistryRepository
    dead_letters: DeadLetterStore
    presence: Presence
    metrics: CollectorRegistry
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    alerts: AlertStage | None = None
    users: UserStore | None = None
    institutions_in_towns: Callable[[Iterable[str]], list[str]] = field(default=lambda _towns: [])
    tickets: TicketStage | None = None
    events: EventLog | None = None
    health: Health = field(default_factory=Health)
    # Set at shutdown: live streams end, their clients reconnect to whoever serves next.
    closing: threading.Event = field(default_factory=threading.Event)
    database: DatabaseWatch | None = None
    streams: StreamSlots = field(default_factory=StreamSlots)
    # Opens /metrics and the detail of /readyz, nothing else (Prometheus holds it).
    metrics_token: str | None = None
    accounts: Accounts | None = None  # logins, sessions, the audit log
    # True once `hazardwatch admin-token revoke` has run: the bootstrap token is refused.
    bootstrap_revoked: Callable[[], bool] = field(default=lambda: False)
    # What people read: the console's time zone and default language.
    display: DisplaySettings = field(default_factory=DisplaySettings)
    # A device's readings read back from the time-series store (None: no store to ask).
    readings: ReadingsSource | None = None


def get_context(request: Request) -> ApiContext:
    """The context stored on the app."""
    context: ApiContext = request.app.state.context
    return context


ContextDep = Annotated[ApiContext, Depends(get_context)]
_bearer = HTTPBearer(auto_error=False)

SESSION_COOKIE = "hw_session"
# Over HTTPS: the __Host- prefix makes browsers keep it only with Secure, Path=/ and no Domain.
SECURE_SESSION_COOKIE = "__Host-hw_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/api/v1/session"  # POST: the one route under /api open without credentials
UNAUTHORIZED = "a valid bearer token is required"
SESSION_ENDED = (
    "the session has ended (logged out, unused too long, at its end, or revoked): log in again"
)
CALLER = "hazardwatch.caller"  # the scope's state key under which BodyGate leaves the caller
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="session (log in)")


@dataclass(frozen=True)
class Caller:
    """Who makes a request, and how: a bearer token (a machine, or the bootstrap admin) or a
    session cookie (a person who logged in)."""

    user: User
    token: str | None = None
    session_id: str | None = None  # the cookie's value (never stored or logged)
    session: Session | None = None

    @property
    def csrf_token(self) -> str | None:
        """What a session's changes must send as X-CSRF-Token (None: a token needs none)."""
        return csrf_token(self.session_id) if self.session_id is not None else None


class RefusedError(Exception):
    """Why a request is not let in: its status, the reason and headers."""

    def __init__(self, code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers

    def http(self) -> HTTPException:
        """As the app answers it."""
        return HTTPException(self.code, self.detail, headers=self.headers)


def _unauthorized(detail: str = UNAUTHORIZED) -> RefusedError:
    return RefusedError(status.HTTP_401_UNAUTHORIZED, detail, {"WWW-Authenticate": "Bearer"})


def identify(
    context: ApiContext,
    *,
    method: str,
    authorization: str | None,
    cookies: Mapping[str, str],
    csrf: str | None,
    https: bool = False,
) -> Caller:
    """The caller of a request, from its bearer token, else its session cookie; a change
    (POST, PUT, PATCH, DELETE) made with a session must carry the session's CSRF token.
    RefusedError (401, 403) otherwise. Blocking: it may ask the database, and raises what
    the stores raise while that is away."""
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() == "bearer" and token:
        user = user_for_token(context, token)
        if user is None:
            raise _unauthorized()
        return Caller(user, token=token)
    if context.accounts is None:
        raise _unauthorized()
    session_id = cookies.get(SECURE_SESSION_COOKIE)
    if session_id is None and not _secure_only(context.accounts, https):
        # Plain HTTP only: under HTTPS a `hw_session` cookie that another subdomain or the
        # network planted could log the browser into an account of its choosing.
        session_id = cookies.get(SESSION_COOKIE)
    if not session_id:
        raise _unauthorized()
    session = context.accounts.sessions.get(session_id)
    if session is None:
        raise _unauthorized(SESSION_ENDED)
    if method.upper() in UNSAFE_METHODS and not csrf_matches(session_id, csrf):
        why = "does not match this session" if csrf else "is missing"
        raise RefusedError(
            status.HTTP_403_FORBIDDEN,
            f"the {CSRF_HEADER} header {why}: a change made with a session cookie must send "
            "the session's csrf_token (from the login's answer or GET /api/v1/session)",
        )
    return Caller(session.user, session_id=session_id, session=session)


def _secure_only(accounts: Accounts, https: bool) -> bool:
    """Whether sessions come only in the `__Host-` cookie (HTTPS, or always by the setting)."""
    setting = accounts.settings.cookie_secure
    return setting == "always" or (setting == "auto" and https)


def user_for_token(context: ApiContext, token: str) -> User | None:
    """The bootstrap admin (unless revoked) or the stored user with this unexpired token, or
    None (blocking: it may ask the database, and raises what UserStore.by_token raises while
    that is away)."""
    admin = context.admin_token
    if (
        admin is not None
        and secrets.compare_digest(token.encode(), admin.encode())
        and not context.bootstrap_revoked()
    ):
        return ADMIN
    return context.users.by_token(token) if context.users is not None else None


def require_caller(
    request: Request,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    _session: Annotated[str | None, Depends(_cookie)],
) -> Caller:
    """Who calls: by bearer token or session cookie (identify); as BodyGate found it, if it
    looked already."""
    known = request.scope.get("state", {}).get(CALLER)
    if isinstance(known, Caller):
        return known
    authorization = f"Bearer {credentials.credentials}" if credentials is not None else None
    try:
        return identify(
            context,
            method=request.method,
            authorization=authorization,
            cookies=request.cookies,
            csrf=request.headers.get(CSRF_HEADER),
            https=request.url.scheme == "https",
        )
    except RefusedError as refused:
        raise refused.http() from None


CurrentCaller = Annotated[Caller, Depends(require_caller)]


def require_token(caller: CurrentCaller) -> User:
    """The user who calls, by bearer token or session (the name is older than sessions)."""
    return caller.user


CurrentUser = Annotated[User, Depends(require_token)]


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and secrets.compare_digest(given.encode(), expected.encode())


async def monitoring_allowed(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> bool:
    """True for the metrics token or the bootstrap admin token (unless revoked). Stored users
    are not looked up: monitoring must answer while the database does not."""
    if credentials is None:
        return False
    token = credentials.credentials
    if _same(token, context.metrics_token):
        return True
    return not context.bootstrap_revoked() and _same(token, context.admin_token)


MonitoringAllowed = Annotated[bool, Depends(monitoring_allowed)]


async def require_monitoring(allowed: MonitoringAllowed) -> None:
    """401 unless the metrics token or the admin token comes along."""
    if not allowed:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the metrics token or the admin token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def client_address(request: Request) -> str | None:
    """The client's address (behind a trusted proxy, the one it names: [auth]
    trusted_proxies)."""
    return request.client.host if request.client is not None else None


@dataclass(frozen=True)
class AuditTrail:
    """Records what the caller of a request changes, in the audit log (core/audit.py)."""

    accounts: Accounts | None
    actor: str
    address: str | None

    def record(self, action: str, object: str | None = None, **detail: Any) -> None:
        """An entry: `action` on `object`, with what changed in `detail` (never secrets)."""
        if self.accounts is not None:
            self.accounts.audit.record(self.actor, action, object, self.address, detail)


def audit_trail(request: Request, context: ContextDep, caller: CurrentCaller) -> AuditTrail:
    """The audit trail of this request's caller."""
    return AuditTrail(context.accounts, caller.user.name, client_address(request))


AuditDep = Annotated[AuditTrail, Depends(audit_trail)]


def require_database(context: ContextDep, _user: CurrentUser) -> None:
    """503 at once while the database does not answer, instead of a request that hangs
    (after the caller is known: a stranger learns nothing of the database)."""
    if context.database is not None:
        context.database.check()


NeedsDatabase = Depends(require_database)


def scope(context: ApiContext, user: User) -> list[str] | None:
    """The institutions the user may see; None: all."""
    return visible_institutions(user, context.institutions_in_towns)


def require(allowed: bool, why: str) -> None:
    """403 unless allowed."""
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, why)


def narrow(wanted: list[str] | None, visible: list[str] | None) -> list[str] | None:
    """The institutions to filter by: those asked for, within those visible (None: all)."""
    if visible is None:
        return wanted or None
    if not wanted:
        return visible
    return [i for i in wanted if i in set(visible)]


def still_valid(context: ApiContext, caller: Caller, *, touch: bool = False) -> bool:
    """Whether the caller would still be let in (a revoked user, an expired token, an ended
    session are not); `touch`: a session's check counts as its use. While the database is
    away, yes: a duty officer's stream is not cut for an outage."""
    try:
        if caller.session_id is not None:
            if context.accounts is None:
                return False
            return context.accounts.sessions.get(caller.session_id, touch=touch) is not None
        return caller.token is None or user_for_token(context, caller.token) is not None
    except (DatabaseUnavailableError, SQLAlchemyError):
        return True

"""What the HTTP API needs from the rest of the service, passed in explicitly."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from alerts.stage import AlertStage
from api.streams import StreamSlots
from core.db import DatabaseUnavailableError, DatabaseWatch
from core.health import Health
from core.ports import EventLog
from core.registry.repository import RegistryRepository
from core.users import ADMIN, User, UserStore, visible_institutions
from ingest.deadletters import DeadLetterStore
from ingest.presence import Presence
from tickets.stage import TicketStage

ReadinessCheck = Callable[[], bool]


@dataclass
class ApiContext:
    """Dependencies of the app; built by the composition root."""

    admin_token: str
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


def get_context(request: Request) -> ApiContext:
    """The context stored on the app."""
    context: ApiContext = request.app.state.context
    return context


ContextDep = Annotated[ApiContext, Depends(get_context)]
_bearer = HTTPBearer(auto_error=False)


def user_for_token(context: ApiContext, token: str) -> User | None:
    """The bootstrap admin or the stored user with this token, or None (blocking: it may ask
    the database, and raises what UserStore.by_token raises while that is away)."""
    if secrets.compare_digest(token.encode(), context.admin_token.encode()):
        return ADMIN
    return context.users.by_token(token) if context.users is not None else None


def require_token(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user whose bearer token this is: the bootstrap admin or a stored user."""
    user = user_for_token(context, credentials.credentials) if credentials is not None else None
    if user is not None:
        return user
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "a valid bearer token is required",
        headers={"WWW-Authenticate": "Bearer"},
    )


CurrentUser = Annotated[User, Depends(require_token)]


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and secrets.compare_digest(given.encode(), expected.encode())


async def monitoring_allowed(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> bool:
    """True for the metrics token or the bootstrap admin token. Stored users are not looked up:
    monitoring must answer while the database does not."""
    if credentials is None:
        return False
    token = credentials.credentials
    return _same(token, context.metrics_token) or _same(token, context.admin_token)


MonitoringAllowed = Annotated[bool, Depends(monitoring_allowed)]


async def require_monitoring(allowed: MonitoringAllowed) -> None:
    """401 unless the metrics token or the admin token comes along."""
    if not allowed:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the metrics token or the admin token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


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


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The bearer token as sent (for a long request to check later that it still holds)."""
    return credentials.credentials if credentials is not None else None


def token_still_valid(context: ApiContext, token: str) -> bool:
    """Whether the token would still be let in (a revoked user's is not); while the database
    is away, yes: a duty officer's stream is not cut for an outage."""
    try:
        return user_for_token(context, token) is not None
    except (DatabaseUnavailableError, SQLAlchemyError):
        return True

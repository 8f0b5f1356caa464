"""What the HTTP API needs from the rest of the service, passed in explicitly."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from alerts.stage import AlertStage
from core.broadcast import Broadcaster
from core.registry.repository import RegistryRepository
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
    tickets: TicketStage | None = None
    broadcaster: Broadcaster = field(default_factory=Broadcaster)


def get_context(request: Request) -> ApiContext:
    """The context stored on the app."""
    context: ApiContext = request.app.state.context
    return context


ContextDep = Annotated[ApiContext, Depends(get_context)]
_bearer = HTTPBearer(auto_error=False)


def require_token(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Accept only the bearer token; compare in constant time."""
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), context.admin_token.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "admin"


CurrentUser = Annotated[str, Depends(require_token)]

"""The FastAPI application factory; dependencies come in explicitly."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from api import console
from api.deps import ApiContext
from api.limits import DEFAULT_LIMITS, BodyGate, BodyLimits
from api.routers import (
    alerts,
    audit,
    dead_letters,
    devices,
    health,
    institutions,
    reports,
    session,
    stream,
    tickets,
    users,
)
from api.schemas import NUL_REFUSED
from core.db import DatabaseUnavailableError

log = logging.getLogger(__name__)

DATABASE_AWAY = (OperationalError, InterfaceError, PoolTimeoutError, DatabaseUnavailableError)

# Where the Swagger UI files (shipped by fastapi-offline) are served from.
DOCS_ASSETS = "/docs-assets"
# Swagger UI would send the schema to validator.swagger.io for its badge: not on our network.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def create_app(
    context: ApiContext, limits: BodyLimits = DEFAULT_LIMITS, *, docs: bool = True
) -> FastAPI:
    """An app serving the core endpoints of contract section 5; request bodies within
    `limits`, read only once the caller is known (api/limits.py).

    `docs`: /docs (Swagger UI, every file of it served from this app, none from a CDN) and
    /openapi.json; False: neither exists (404).
    """
    if docs:
        app = FastAPIOffline(
            title="hazardwatch",
            version="1",
            docs_url="/docs",
            redoc_url=None,
            static_url=DOCS_ASSETS,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
    else:
        app = FastAPI(
            title="hazardwatch", version="1", docs_url=None, redoc_url=None, openapi_url=None
        )
    app.state.context = context
    app.include_router(health.router)
    app.include_router(institutions.router)
    app.include_router(devices.router)
    app.include_router(dead_letters.router)
    app.include_router(alerts.router)
    app.include_router(tickets.router)
    app.include_router(reports.router)
    app.include_router(stream.router)
    app.include_router(session.router)
    app.include_router(audit.router)
    app.include_router(users.router)
    app.include_router(console.router)
    app.mount(console.STATIC_PATH, console.static_files(), name="static")
    for away in DATABASE_AWAY:
        app.add_exception_handler(away, _database_away)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(
        BodyGate, context=context, limits=limits, away=DATABASE_AWAY, on_away=_database_away
    )
    app.add_middleware(NoNul)
    return app


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 with the fields at fault; text that UTF-8 cannot encode (a lone surrogate
    sent as `"\\ud800"` in JSON) comes back escaped instead of making it a 500."""
    assert isinstance(exc, RequestValidationError)
    content = {"detail": jsonable_encoder(exc.errors())}
    try:
        return JSONResponse(content, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    except UnicodeEncodeError:
        return Response(
            json.dumps(content, ensure_ascii=True),
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            media_type="application/json",
        )


class NoNul:
    """Refuses (400) a request with a NUL character in its path or query: no id or filter has
    one, and PostgreSQL can neither store nor compare one. (Bodies: api.schemas.RequestBody.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode("latin-1")
            pairs = parse_qsl(query, keep_blank_values=True)
            if "\x00" in scope["path"] or any("\x00" in k + v for k, v in pairs):
                refusal = JSONResponse(
                    {"detail": f"{NUL_REFUSED} in a path or a query"},
                    status_code=status.HTTP_400_BAD_REQUEST,
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _database_away(request: Request, exc: Exception) -> JSONResponse:
    """The SQL database did not answer: 503 with the reason, never a 500. Alarms still flow."""
    log.warning("%s %s: the database did not answer: %s", request.method, request.url.path, exc)
    detail = (
        "the database is not answering; alarms still reach the live stream, try this again later"
    )
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "10"},
    )

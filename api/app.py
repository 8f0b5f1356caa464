"""The FastAPI application factory; dependencies come in explicitly."""

from __future__ import annotations

from fastapi import FastAPI

from api.deps import ApiContext
from api.routers import alerts, dead_letters, devices, health, reports, stream, tickets


def create_app(context: ApiContext) -> FastAPI:
    """An app serving the core endpoints of contract section 5."""
    app = FastAPI(title="hazardwatch", version="1", docs_url="/docs", redoc_url=None)
    app.state.context = context
    app.include_router(health.router)
    app.include_router(devices.router)
    app.include_router(dead_letters.router)
    app.include_router(alerts.router)
    app.include_router(tickets.router)
    app.include_router(reports.router)
    app.include_router(stream.router)
    return app

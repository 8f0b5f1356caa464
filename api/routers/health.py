"""Liveness, readiness and metrics (no auth: probes and Prometheus scrape them)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ContextDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: ContextDep) -> JSONResponse:
    """200 when broker, time-series store and database are reachable."""
    results = {}
    for name, check in context.readiness.items():
        try:
            results[name] = await asyncio.wait_for(asyncio.to_thread(check), timeout=3.0)
        except Exception:  # noqa: BLE001 - a failing check is a "no", not an error
            results[name] = False
    ready = all(results.values())
    return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(context: ContextDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(context.metrics), media_type=CONTENT_TYPE_LATEST)

"""Liveness and readiness (no auth: probes use them) and metrics (the metrics or admin token).

/readyz tells anyone whether alarms can flow; what each component is doing, with the reasons
of its failures (host names, users, drivers' messages), only to the bearer of the metrics or
admin token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ContextDep, MonitoringAllowed, require_monitoring

router = APIRouter()

CHECK_TIMEOUT_S = 3.0
REQUIRED = ("broker",)  # without it no alarm comes in; the others the service rides out


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process is up (liveness only: restart it if this fails)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: ContextDep, detail: MonitoringAllowed) -> JSONResponse:
    """200 while alarms can flow: the broker is connected and no critical part of the service
    is stuck or failed. `status` says `degraded` when something is wrong that the service
    rides out (the time-series store or the SQL database away, a webhook refusing). With the
    metrics or admin token, every component is listed with its state, its last progress and
    its backlog."""
    checks = {name: await _probe(check) for name, check in context.readiness.items()}
    components_ready, status, components = context.health.report()
    ready = components_ready and all(checks.get(name, True) for name in REQUIRED)
    if not ready:
        status = "unready"
    elif status == "ok" and not all(checks.values()):
        status = "degraded"
    body: dict[str, object] = {"ready": ready, "status": status, "checks": checks}
    if detail:
        body["components"] = components
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", dependencies=[Depends(require_monitoring)])
async def metrics(context: ContextDep) -> Response:
    """Prometheus text format (collected in a worker thread: collectors may block)."""
    text = await asyncio.to_thread(generate_latest, context.metrics)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


# A probe still waiting for its last answer (a hung server) is not asked again: a no at once,
# instead of one more thread stuck in it for every request.
_probing: dict[Callable[[], bool], asyncio.Future[bool]] = {}


async def _probe(check: Callable[[], bool]) -> bool:
    running = _probing.get(check)
    if running is not None and not running.done():
        return False
    future: asyncio.Future[bool] = asyncio.ensure_future(asyncio.to_thread(check))
    _probing[check] = future
    try:
        return await asyncio.wait_for(asyncio.shield(future), CHECK_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - a failing check is a "no", not an error
        return False

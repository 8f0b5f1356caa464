"""Alerts: the board, acknowledging and resolving (contract section 5)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from alerts.stage import AlertStage
from api.deps import (
    AuditDep,
    AuditTrail,
    ContextDep,
    CurrentUser,
    NeedsDatabase,
    narrow,
    require,
    require_database,
    scope,
)
from api.schemas import OFFSET_MAX, REFUSAL, AlertAct, AlertDetail, HistoryPublic
from core.alerting import Alert, AlertKind, AlertState
from core.errors import InvalidTransitionError, NotFoundError
from core.users import User

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=REFUSAL)

_OPEN = ("active", "acknowledged", "cleared")


def _stage(context: ContextDep) -> AlertStage:
    if context.alerts is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the alert engine is not running")
    return context.alerts


@router.get("", dependencies=[NeedsDatabase])
def list_alerts(
    context: ContextDep,
    user: CurrentUser,
    response: Response,
    state: Annotated[
        list[str] | None,
        Query(description="active, acknowledged, cleared, resolved, or open (all but resolved)"),
    ] = None,
    institution: str | None = None,
    kind: AlertKind | None = None,
    device: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> list[Alert]:
    """Alerts, newest first. The `X-Event-Position` header: the event log's position up to
    which every change is in this answer — a board that follows the stream from there
    (`GET /api/v1/stream?last_event_id=`) misses nothing between the two."""
    states: list[str] = []
    for value in state or []:
        for part in value.split(","):
            if part == "open":
                states.extend(_OPEN)
            elif part in AlertState.__members__.values():
                states.append(part)
            elif part:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no state {part!r}")
    stage = _stage(context)
    # Read before the query: the answer holds at least every change up to here.
    response.headers["X-Event-Position"] = str(stage.projection.position)
    found = stage.store.search(
        states=states,
        institutions=narrow([institution] if institution else None, scope(context, user)),
        kind=kind.value if kind else None,
        device=device,
        limit=limit,
        offset=offset,
    )
    return _with_tickets(context, found)


@router.get("/{alert_id}", dependencies=[NeedsDatabase])
def get_alert(alert_id: str, context: ContextDep, user: CurrentUser) -> AlertDetail:
    """One alert with its history, oldest first."""
    stage = _stage(context)
    alert = _visible(context, user, stage.engine.get(alert_id), alert_id)
    (alert,) = _with_tickets(context, [alert])
    history = [HistoryPublic.model_validate(entry) for entry in stage.store.history(alert_id)]
    return AlertDetail(**alert.model_dump(exclude={"escalation_level"}), history=history)


@router.post("/{alert_id}/ack")
def acknowledge(
    alert_id: str,
    context: ContextDep,
    user: CurrentUser,
    audit: AuditDep,
    body: AlertAct | None = None,
) -> Alert:
    """Acknowledge, with an optional note; a cleared alarm is then resolved."""
    return _act(context, alert_id, user, audit, body, resolve=False)


@router.post("/{alert_id}/resolve")
def resolve(
    alert_id: str,
    context: ContextDep,
    user: CurrentUser,
    audit: AuditDep,
    body: AlertAct | None = None,
) -> Alert:
    """Resolve an acknowledged or cleared alert, with an optional note."""
    return _act(context, alert_id, user, audit, body, resolve=True)


def _with_tickets(context: ContextDep, found: list[Alert]) -> list[Alert]:
    """The alerts with `ticket_id` filled in from the ledger (its alert-to-ticket table)."""
    if context.tickets is None or not found:
        return found
    links = context.tickets.store.tickets_of_alerts([a.id for a in found])
    return [a.model_copy(update={"ticket_id": links.get(a.id)}) for a in found]


def _visible(context: ContextDep, user: User, alert: Alert | None, alert_id: str) -> Alert:
    """The alert, if it exists and the user may see it (else 404: not even that it exists)."""
    visible = scope(context, user)
    if alert is None or (visible is not None and alert.institution not in visible):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id!r}")
    return alert


def _act(
    context: ContextDep,
    alert_id: str,
    user: User,
    audit: AuditTrail,
    body: AlertAct | None,
    *,
    resolve: bool,
) -> Alert:
    engine = _stage(context).engine
    alert = engine.open_alert(alert_id)  # on the board: no database needed
    if alert is None:  # resolved, or no such alert: the database says which
        require_database(context, user)
        alert = engine.get(alert_id)
    before = _visible(context, user, alert, alert_id)
    require(user.may_acknowledge, f"a {user.role} user cannot acknowledge or resolve alerts")
    note = body.note if body else None
    try:
        if resolve:
            done = engine.resolve(alert_id, user.name, note)
        else:
            done = engine.acknowledge(alert_id, user.name, note)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except InvalidTransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except OSError as exc:  # the event log cannot be written (yet): the change waits in memory
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the change is made but not yet durable (the event log cannot be written: {exc}); "
            "it is written as soon as the disk takes writes again",
        ) from None
    audit.record(
        "alert_resolved" if resolve else "alert_acknowledged",
        f"alert:{alert_id}",
        institution=done.institution,
        state={"from": before.state, "to": done.state},
        note=note,
    )
    return done

"""The hazard ledger: list, read, report from other channels, and the steps of the loop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Response, UploadFile, status
from fastapi.responses import FileResponse

from api.deps import (
    AuditDep,
    AuditTrail,
    ContextDep,
    CurrentUser,
    NeedsDatabase,
    narrow,
    require,
    scope,
)
from api.permissions import may_report, may_take, may_waive_verification, steps_open_to
from api.schemas import (
    OFFSET_MAX,
    REFUSAL,
    DateTimeText,
    EvidenceLink,
    Text,
    TicketAssign,
    TicketCreate,
    TicketDetail,
    TicketRectified,
    TicketStep,
)
from core.errors import InvalidInputError, InvalidTransitionError, NotFoundError
from core.users import User
from tickets.attachments import AttachmentQuotaError, AttachmentTooLargeError
from tickets.ledger import Ledger
from tickets.models import Evidence, Ticket, TicketAction, TicketSource, TicketStatus
from tickets.stage import TicketStage
from tickets.store import TicketQuery

router = APIRouter(
    prefix="/api/v1/tickets", tags=["tickets"], dependencies=[NeedsDatabase], responses=REFUSAL
)


def _stage(context: ContextDep) -> TicketStage:
    if context.tickets is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the ledger is not running")
    return context.tickets


def _split(values: list[str] | None) -> list[str]:
    return [part for value in values or [] for part in value.split(",") if part]


@router.get("")
def list_tickets(
    context: ContextDep,
    user: CurrentUser,
    response: Response,
    status_: Annotated[
        list[TicketStatus] | None, Query(alias="status", description="repeat for several")
    ] = None,
    institution: Annotated[list[str] | None, Query()] = None,
    source: Annotated[list[TicketSource] | None, Query()] = None,
    category: str | None = None,
    device: str | None = None,
    overdue: Annotated[bool, Query(description="only open tickets past their deadline")] = False,
    found_from: DateTimeText | None = None,
    found_before: DateTimeText | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> list[Ticket]:
    """Tickets, newest found first; the total is in the `X-Total-Count` header."""
    stage = _stage(context)
    query = TicketQuery(
        statuses=[s.value for s in status_ or []],
        institutions=narrow(_split(institution) or None, scope(context, user)),
        sources=[s.value for s in source or []],
        category=category,
        device=device,
        found_from=found_from,
        found_before=found_before,
        overdue_at=stage.ledger.now() if overdue else None,
    )
    response.headers["X-Total-Count"] = str(stage.store.count(query))
    return stage.store.search(query, limit=limit, offset=offset)


@router.get("/{ticket_id}")
def get_ticket(ticket_id: str, context: ContextDep, user: CurrentUser) -> TicketDetail:
    """One ticket with its audit trail."""
    store = _stage(context).store
    ticket = _visible(context, user, store.get(ticket_id), ticket_id)
    return TicketDetail(
        **ticket.model_dump(), events=store.events(ticket_id), steps=steps_open_to(user, ticket)
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_ticket(
    body: TicketCreate, context: ContextDep, user: CurrentUser, audit: AuditDep
) -> Ticket:
    """A hazard found by self-inspection, supervisory inspection or a verified public report."""
    ledger = _stage(context).ledger
    source = TicketSource(body.source)
    _refuse_if(may_report(user, source))
    visible = scope(context, user)
    require(
        visible is None or body.institution in visible,
        f"{user.name} may not report for institution {body.institution!r}",
    )
    if not body.verification_required:
        _refuse_if(may_waive_verification(user))
        if body.major_hazard:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "a major hazard is always verified on site: verification_required must be true",
            )
    if body.device is not None:  # every object named is checked, not only the institution
        device = context.registry.device(body.device)
        if device is None or device.institution != body.institution:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"no device {body.device!r} in institution {body.institution!r}",
            )
    fields = body.model_dump(exclude={"source", "evidence"})
    try:
        ticket = ledger.create(
            actor=user.name, source=source, evidence=_evidence(body.evidence, {}), **fields
        )
    except (NotFoundError, InvalidInputError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except InvalidTransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    audit.record(
        "ticket_created",
        f"ticket:{ticket.id}",
        institution=ticket.institution,
        source=source.value,
        category=ticket.category,
        major_hazard=ticket.major_hazard,
        status=ticket.status,
        evidence=[link.name or link.url or link.sha256 for link in body.evidence],
    )
    return ticket


@router.post("/{ticket_id}/assign")
def assign(
    ticket_id: str, body: TicketAssign, context: ContextDep, user: CurrentUser, audit: AuditDep
) -> Ticket:
    """open → assigned (or hand an assigned ticket on), optionally to another unit or person."""
    changes = body.model_dump(
        include={"responsible_unit", "responsible_person", "responsible_phone"},
        exclude_none=True,
    )
    return _act(context, ticket_id, TicketAction.ASSIGNED, user, body, audit=audit, **changes)


@router.post("/{ticket_id}/start")
def start(
    ticket_id: str,
    context: ContextDep,
    user: CurrentUser,
    audit: AuditDep,
    body: TicketStep | None = None,
) -> Ticket:
    """assigned → rectifying."""
    return _act(context, ticket_id, TicketAction.STARTED, user, body, audit=audit)


@router.post("/{ticket_id}/rectified")
def rectified(
    ticket_id: str, body: TicketRectified, context: ContextDep, user: CurrentUser, audit: AuditDep
) -> Ticket:
    """rectifying → awaiting_verification, with the measures taken (closed at once if the
    category needs no on-site verification)."""
    return _act(
        context, ticket_id, TicketAction.RECTIFIED, user, body, audit=audit, measures=body.measures
    )


@router.post("/{ticket_id}/verify")
def verify(
    ticket_id: str,
    context: ContextDep,
    user: CurrentUser,
    audit: AuditDep,
    body: TicketStep | None = None,
) -> Ticket:
    """awaiting_verification → closed (销号), by someone other than the rectifier."""
    return _act(context, ticket_id, TicketAction.VERIFIED, user, body, audit=audit)


@router.post("/{ticket_id}/reject")
def reject(
    ticket_id: str,
    context: ContextDep,
    user: CurrentUser,
    audit: AuditDep,
    body: TicketStep | None = None,
) -> Ticket:
    """awaiting_verification → rectifying: verification failed."""
    return _act(context, ticket_id, TicketAction.REJECTED, user, body, audit=audit)


@router.post("/{ticket_id}/reopen")
def reopen(
    ticket_id: str,
    context: ContextDep,
    user: CurrentUser,
    audit: AuditDep,
    body: TicketStep | None = None,
) -> Ticket:
    """closed → open."""
    return _act(context, ticket_id, TicketAction.REOPENED, user, body, audit=audit)


@router.post("/{ticket_id}/comment")
def comment(
    ticket_id: str, body: TicketStep, context: ContextDep, user: CurrentUser, audit: AuditDep
) -> Ticket:
    """A note or evidence without a change of status."""
    return _act(context, ticket_id, TicketAction.COMMENTED, user, body, audit=audit)


@router.post("/{ticket_id}/attachments", status_code=status.HTTP_201_CREATED)
def upload(
    ticket_id: str,
    file: UploadFile,
    context: ContextDep,
    user: CurrentUser,
    audit: AuditDep,
    note: Annotated[Text | None, Form(max_length=5000)] = None,
) -> Evidence:
    """Keep a file (a photo of the repair, a signed form) as evidence of the ticket: stored on
    disk and recorded in the audit trail at once (a `commented` step); later steps refer to it
    by its `sha256`."""
    stage = _stage(context)
    ticket = _visible(context, user, stage.store.get(ticket_id), ticket_id)
    _refuse_if(may_take(user, TicketAction.COMMENTED, ticket))
    if stage.attachments is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no attachment store")
    try:
        evidence = stage.attachments.save(
            file.file, file.filename, file.content_type, institution=ticket.institution
        )
    except (AttachmentTooLargeError, AttachmentQuotaError) as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from None
    try:
        stage.ledger.act(
            ticket_id,
            TicketAction.COMMENTED,
            user.name,
            note=note or f"attachment {evidence.name}",
            evidence=[evidence],
        )
    except (NotFoundError, InvalidTransitionError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    audit.record(
        "attachment_uploaded",
        f"ticket:{ticket_id}",
        institution=ticket.institution,
        file=evidence.name,
        sha256=evidence.sha256,
        size=evidence.size,
        content_type=evidence.content_type,
    )
    return evidence


# Shown in the browser; any other file is downloaded as bytes, whatever type its uploader
# declared. Not PDF: a reader plugin may run a PDF's scripts on this origin.
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "text/plain"})
# An evidence file is the uploader's, not ours: nothing in it may run, frame or be framed.
FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@router.get(
    "/{ticket_id}/attachments/{sha256}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download(ticket_id: str, sha256: str, context: ContextDep, user: CurrentUser) -> FileResponse:
    """A file kept as evidence of this ticket (only files its audit trail refers to)."""
    stage = _stage(context)
    _visible(context, user, stage.store.get(ticket_id), ticket_id)
    evidence = _uploaded(stage, ticket_id).get(sha256)
    if evidence is None or stage.attachments is None or not stage.attachments.has(sha256):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no attachment {sha256!r} on {ticket_id}")
    inline = evidence.content_type in INLINE_TYPES
    return FileResponse(
        stage.attachments.path(sha256),
        media_type=evidence.content_type if inline else "application/octet-stream",
        filename=evidence.name,
        content_disposition_type="inline" if inline else "attachment",
        headers=FILE_HEADERS,
    )


def _uploaded(stage: TicketStage, ticket_id: str) -> dict[str, Evidence]:
    """The stored files the ticket's audit trail refers to, by digest."""
    return {
        item.sha256: item
        for event in stage.store.events(ticket_id)
        for item in event.evidence
        if item.sha256 is not None and item.path is not None
    }


def _evidence(links: list[EvidenceLink], uploaded: dict[str, Evidence]) -> list[Evidence]:
    """Links as they are; uploaded files as stored (refused if not uploaded to this ticket)."""
    found: list[Evidence] = []
    for link in links:
        if link.url is not None:
            found.append(Evidence(name=link.name or link.url, url=link.url))
            continue
        stored = uploaded.get(link.sha256 or "")
        if stored is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"no file {link.sha256} uploaded to this ticket: upload it first "
                "(POST /api/v1/tickets/{id}/attachments)",
            )
        found.append(stored.model_copy(update={"name": link.name}) if link.name else stored)
    return found


def _refuse_if(why: str | None) -> None:
    """403 with the reason, if there is one."""
    if why is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, why)


def _visible(context: ContextDep, user: User, ticket: Ticket | None, ticket_id: str) -> Ticket:
    """The ticket, if it exists and the user may see it (else 404: not even that it exists)."""
    visible = scope(context, user)
    if ticket is None or (visible is not None and ticket.institution not in visible):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id!r}")
    return ticket


def _act(
    context: ContextDep,
    ticket_id: str,
    action: TicketAction,
    user: User,
    body: TicketStep | None,
    *,
    audit: AuditTrail,
    **changes: Any,
) -> Ticket:
    """A step on a ticket by `user`, recorded in the audit log."""
    stage = _stage(context)
    ledger: Ledger = stage.ledger
    ticket = _visible(context, user, stage.store.get(ticket_id), ticket_id)
    _refuse_if(may_take(user, action, ticket))
    body = body or TicketStep()
    evidence = _evidence(body.evidence, _uploaded(stage, ticket_id) if body.evidence else {})
    try:
        done = ledger.act(
            ticket_id, action, user.name, note=body.note, evidence=evidence, **changes
        )
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except InvalidTransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    audit.record(
        f"ticket_{action.value}",
        f"ticket:{ticket_id}",
        institution=ticket.institution,
        status={"from": ticket.status, "to": done.status},
        changes=changes,
        note=body.note,
        evidence=[item.name for item in evidence],
    )
    return done

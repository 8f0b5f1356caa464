"""The audit log: logins, failed logins and every change, for the bureau and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from api.deps import ContextDep, CurrentUser, NeedsDatabase, require
from api.schemas import OFFSET_MAX, REFUSAL, DateTimeText
from core.audit import AuditEntry, AuditQuery

router = APIRouter(
    prefix="/api/v1/audit", tags=["audit"], dependencies=[NeedsDatabase], responses=REFUSAL
)


@router.get("")
def list_audit(
    context: ContextDep,
    user: CurrentUser,
    response: Response,
    actor: str | None = None,
    action: Annotated[
        str | None, Query(description="login, login_failed, ticket_verified, …")
    ] = None,
    from_: Annotated[
        DateTimeText | None, Query(alias="from", description="at or after, with its offset")
    ] = None,
    to: Annotated[DateTimeText | None, Query(description="before, with its offset")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> list[AuditEntry]:
    """Entries, newest first; the total is in the `X-Total-Count` header. Admin and the
    bureau only."""
    require(user.may_read_audit, "the audit log is for the bureau and admins")
    if context.accounts is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "there is no audit log")
    audit = context.accounts.audit
    audit.flush()  # what happened a moment ago is in
    query = AuditQuery(actor=actor, action=action, since=from_, before=to)
    response.headers["X-Total-Count"] = str(audit.count(query))
    return audit.search(query, limit=limit, offset=offset)

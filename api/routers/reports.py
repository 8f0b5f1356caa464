"""Monthly reports of the ledger, as the CLI writes them: the list and the dispatch table."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Response, status

from api.deps import ContextDep, CurrentUser, NeedsDatabase, scope
from api.schemas import REFUSAL
from tickets.reports import Month, Reports

router = APIRouter(
    prefix="/api/v1/reports", tags=["reports"], dependencies=[NeedsDatabase], responses=REFUSAL
)

_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@router.get("/{report}", response_model=None)
def get_report(
    report: Literal["ledger", "dispatch"],
    context: ContextDep,
    user: CurrentUser,
    month: Annotated[
        str,
        Query(
            # ASCII digits, and years whose months begin and end in UTC (not 0001, not 9999)
            pattern=r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$",
            description="YYYY-MM, China time, from 1970-01 to 2999-12",
        ),
    ],
    lang: Literal["zh", "en"] = "zh",
    format: Literal["json", "csv", "xlsx"] = "json",
) -> Response | dict[str, Any]:
    """The ledger (清单) or dispatch table (调度表) of a month, for the user's institutions."""
    if context.tickets is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the ledger is not running")
    try:
        period = Month.parse(month)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    names = {i.id: (i.name, i.town) for i in context.registry.institutions()}
    reports = Reports(context.tickets.store.engine, names)
    build = reports.ledger if report == "ledger" else reports.dispatch
    table = build(period, lang, scope(context, user))
    if format == "json":
        return {"title": table.title, "headers": table.headers, "rows": table.rows}
    data = table.csv() if format == "csv" else table.xlsx()
    filename = f"{report}-{period}-{lang}.{format}"
    disposition = f"attachment; filename={filename}; filename*=UTF-8''{quote(table.title)}.{format}"
    return Response(data, media_type=_TYPES[format], headers={"Content-Disposition": disposition})

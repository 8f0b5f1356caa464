"""Malformed requests are refused with a 4xx and a reason, never a 500, before any store is
asked (the stores here are absent); and the refusals are the ones the OpenAPI schema shows.

Each case is an input that once made a 500 or broke the schema (tests/integration/
test_api_fuzz.py found them against the running service).
"""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from api.app import create_app
from api.deps import ApiContext
from api.schemas import AlertAct, TicketCreate

ADMIN = "admin-token-0123456789abcdef"
REPORT = {
    "source": "self_inspection",
    "institution": "inst-1",
    "category": "escape_route_blocked",
    "title": "疏散通道堵塞",
    "due_at": "2030-01-02T10:00:00+08:00",
}


def _context() -> ApiContext:
    """Only the admin token: a request that reached a store would fail with a 500."""
    return ApiContext(
        admin_token=ADMIN,
        registry=cast(Any, None),
        dead_letters=cast(Any, None),
        presence=cast(Any, None),
        metrics=CollectorRegistry(),
    )


async def _send(method: str, url: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(_context()))
    headers = {"Authorization": f"Bearer {ADMIN}", **kwargs.pop("headers", {})}
    async with httpx.AsyncClient(transport=transport, base_url="http://hazardwatch") as client:
        return await client.request(method, url, headers=headers, **kwargs)


def _detail(response: httpx.Response) -> str:
    """The reason given, as text (a sentence, or FastAPI's list of field errors)."""
    detail = response.json()["detail"]
    assert detail, response.text
    return detail if isinstance(detail, str) else " ".join(error["msg"] for error in detail)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # Past 64 bits: SQLite raised OverflowError, PostgreSQL "bigint out of range".
        ("/api/v1/tickets?offset=99999999999999999999", "less than or equal to 2147483647"),
        ("/api/v1/alerts?offset=9223372036854775808", "less than or equal to 2147483647"),
        ("/api/v1/dead-letters?before_id=99999999999999999999", "less than or equal to"),
        ("/api/v1/dead-letters?before_id=-99999999999999999999", "greater than or equal to 0"),
        # Instants with no UTC date (OverflowError when stored as UTC); a number read as 1970.
        ("/api/v1/tickets?found_from=0001-01-01T00:00:00%2B01:00", "years 1 and 9999 in UTC"),
        ("/api/v1/tickets?found_before=9999-12-31T23:59:59-01:00", "years 1 and 9999 in UTC"),
        ("/api/v1/tickets?found_from=0.5", "RFC 3339 text"),
        ("/api/v1/tickets?found_from=1700000000", "RFC 3339 text"),
        # A month whose first or next month has no UTC instant (OverflowError).
        ("/api/v1/reports/ledger?month=9999-12", "String should match pattern"),
        ("/api/v1/reports/dispatch?month=0001-01&format=xlsx", "String should match pattern"),
    ],
)
async def test_out_of_range_parameters_are_refused_with_a_reason(url: str, reason: str) -> None:
    response = await _send("GET", url)
    assert response.status_code == 422, response.text
    assert reason in _detail(response)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/tickets/%00",
        "/api/v1/alerts/a%00b",
        "/api/v1/devices/smoke-1%00",
        "/api/v1/alerts?device=%00",
        "/api/v1/tickets?institution=inst-1&category=a%00",
        "/api/v1/dead-letters?reason=%00",
    ],
)
async def test_a_nul_in_the_path_or_query_is_refused(url: str) -> None:
    """PostgreSQL refused it with a DataError: a 500."""
    response = await _send("GET", url)
    assert response.status_code == 400, response.text
    assert "NUL character" in _detail(response)


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/api/v1/tickets", {**REPORT, "title": "疏散通道\x00堵塞"}),
        ("POST", "/api/v1/tickets", {**REPORT, "evidence": [{"name": "\x00", "url": "http://x"}]}),
        ("POST", "/api/v1/tickets/t-1/comment", {"note": "\x00"}),
        ("POST", "/api/v1/tickets/t-1/assign", {"responsible_person": "王\x00工"}),
        # Accepted with a 200, after which the alerts' SQL projection failed on it for ever.
        ("POST", "/api/v1/alerts/a-1/ack", {"note": "已处理\x00"}),
    ],
)
async def test_a_nul_in_a_body_is_refused(method: str, url: str, body: dict[str, Any]) -> None:
    response = await _send(method, url, json=body)
    assert response.status_code == 422, response.text
    assert "NUL character" in _detail(response)


async def test_a_nul_in_a_form_field_is_refused() -> None:
    response = await _send(
        "POST",
        "/api/v1/tickets/t-1/attachments",
        files={"file": ("a.txt", b"photo", "text/plain")},
        data={"note": "\x00"},
    )
    assert response.status_code == 422, response.text
    assert "NUL character" in _detail(response)


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/tickets", b'{"title": "\\ud800"}'),
        ("/api/v1/tickets/t-1/comment", b'{"note": "\\udfff"}'),
        ("/api/v1/alerts/a-1/ack", b'{"note": "lone \\ud800 surrogate"}'),
    ],
)
async def test_a_lone_surrogate_is_refused_and_its_refusal_can_be_sent(
    url: str, body: bytes
) -> None:
    """The 422 that named the surrogate could not be encoded as UTF-8: a 500 instead."""
    response = await _send("POST", url, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert "valid string" in _detail(response)
    assert "\\ud8" in response.text or "\\udf" in response.text  # shown escaped


def test_dates_come_as_rfc3339_text_and_have_a_utc_instant() -> None:
    for due_at in (0, 1.5, "1700000000", "next week", "2030-01-02"):
        with pytest.raises(ValidationError):
            TicketCreate.model_validate({**REPORT, "due_at": due_at})
    for found_at in ("0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-23:59"):
        with pytest.raises(ValidationError, match="years 1 and 9999 in UTC"):
            TicketCreate.model_validate({**REPORT, "found_at": found_at})
    ticket = TicketCreate.model_validate({**REPORT, "found_at": "2030-01-01 08:00:00Z"})
    assert ticket.found_at is not None and ticket.found_at.year == 2030
    assert AlertAct(note="没有 NUL").note == "没有 NUL"


async def test_refusals_with_a_sentence_are_in_the_schema() -> None:
    """A 422 of the API's own checks says why in one sentence (`no state 'AAA'`); the schema
    showed only FastAPI's list of field errors for a 422."""
    schema = (await _send("GET", "/openapi.json")).json()
    refusal = schema["components"]["schemas"]["Refusal"]["properties"]["detail"]
    assert {"type": "string"} in refusal["anyOf"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}} in (
        refusal["anyOf"]
    )
    for path, method in [
        ("/api/v1/alerts", "get"),
        ("/api/v1/tickets", "post"),
        ("/api/v1/reports/{report}", "get"),
        ("/api/v1/tickets/{ticket_id}/attachments", "post"),
    ]:
        answers = schema["paths"][path][method]["responses"]
        refused = answers["422"]["content"]["application/json"]["schema"]
        assert refused == {"$ref": "#/components/schemas/Refusal"}, (path, method)
    refused_state = await _send("GET", "/api/v1/alerts?state=AAA")
    assert (refused_state.status_code, refused_state.json()) == (422, {"detail": "no state 'AAA'"})

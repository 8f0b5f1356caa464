"""The refusals are the ones the OpenAPI schema shows (the stores here are absent).

Each case is an input that once broke the schema (tests/integration/test_api_fuzz.py found
them against the running service).
"""

from __future__ import annotations

from typing import Any, cast

import httpx
from prometheus_client import CollectorRegistry

from api.app import create_app
from api.deps import ApiContext

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

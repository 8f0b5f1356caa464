"""Malformed input, through the running service (`hazardwatch run`, real Mosquitto, InfluxDB).

1. Schemathesis against the service's own OpenAPI schema (its /openapi.json), for each role:
   every operation under /api, on PostgreSQL (which refuses what SQLite lets by: a NUL in
   text, an integer past 64 bits), in two phases:
   - coverage: boundary values, missing and wrong-typed parameters and bodies, odd Unicode,
     undocumented methods and media types, valid and invalid;
   - fuzzing: Hypothesis examples, valid and invalid, a few per operation; a valid request
     names a real alert, ticket, device or file two times in three (a random id only ever
     meets a 404).
   Checked for every answer: no 5xx; a documented answer has its documented shape; invalid
   input of the coverage phase is refused with a 4xx.
2. Requests no generator thinks of (bugs this file found), on SQLite and on PostgreSQL: each
   refused with a 4xx and its reason, never a 500.
3. The live stream, which never ends and so is not fuzzed: its one header, Last-Event-ID,
   malformed.

The examples are the same on every run (the "hazardwatch" Hypothesis profile derandomizes,
tests/conftest.py). More of them: docs/security.md, "Fuzzing the API".
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response, checks
from schemathesis.schemas import BaseSchema

from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import TOKEN, ServiceProcess, change
from tests.integration.sites import Site
from tests.servers import Postgres

# Examples per operation in the fuzzing phase (the coverage phase adds its own, ~400 each).
EXAMPLES = int(os.environ.get("HAZARDWATCH_FUZZ_EXAMPLES", "3"))
# What refusing invalid input means: a 4xx with its reason (never a 2xx, never a 5xx).
REFUSED = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
STREAM = "/api/v1/stream"


@dataclass
class Target:
    """The running service, a token per role, and real objects to name in paths."""

    site: Site
    tokens: dict[str, str]
    objects: list[dict[str, str]]  # path parameters naming real objects: inst-1's, inst-2's
    sessions: dict[str, requests.Session]  # a connection kept open per role


def _tokens(service: ServiceProcess) -> dict[str, str]:
    """A token per role; the scoped roles see inst-1 (town_office through its town 城关镇)."""
    return {
        "admin": TOKEN,
        "duty_officer": service.add_user("zhao", "duty_officer"),
        "bureau": service.add_user("boss", "bureau"),
        "town_office": service.add_user("li", "town_office", "--town", "城关镇"),
        "institution": service.add_user("wu", "institution", "--institution", "inst-1"),
        "contractor": service.add_user("wang", "contractor", "--institution", "inst-1"),
    }


def _objects(site: Site, institution: str, device: str) -> dict[str, str]:
    """An alert, its sensor ticket and a file uploaded to it, of this institution."""
    site.send(device, "event", {"type": "fault", "code": "sensor_fault"}, institution=institution)
    alert = site.stream.wait_for(change("raised", "device_fault", device), "the fault")["alert"]

    def tickets() -> list[dict[str, Any]]:
        found = site.service.api("GET", "/api/v1/tickets", params={"device": device}).json()
        assert isinstance(found, list)
        return found

    wait_until(lambda: len(tickets()) == 1, timeout=10, what=f"the ticket of {device}")
    ticket_id = tickets()[0]["id"]
    content = f"现场照片 of {institution}".encode()
    uploaded = site.service.api(
        "POST",
        f"/api/v1/tickets/{ticket_id}/attachments",
        files={"file": ("现场照片.txt", content, "text/plain")},
    )
    assert uploaded.status_code == 201, uploaded.text
    return {
        "alert_id": alert["id"],
        "ticket_id": ticket_id,
        "device_id": device,
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def _start(site_factory: Any, request: pytest.FixtureRequest, database: str) -> Site:
    env = {}
    if database == "postgresql":
        postgres: Postgres = request.getfixturevalue("postgres")
        env["HAZARDWATCH_DATABASE_URL"] = postgres.create_database(f"fz_{os.urandom(4).hex()}")
    site: Site = site_factory(**env)
    return site


@pytest.fixture
def target(request: pytest.FixtureRequest, site_factory: Any) -> Iterator[Target]:
    site = _start(site_factory, request, "postgresql")
    objects = [_objects(site, "inst-1", "smoke-1"), _objects(site, "inst-2", "smoke-21")]
    tokens = _tokens(site.service)
    sessions = {role: requests.Session() for role in tokens}
    yield Target(site, tokens, objects, sessions)
    for session in sessions.values():
        session.close()


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {
                "mode": "all",  # valid and invalid input
                "max-examples": EXAMPLES,
                "with-security-parameters": False,  # each role's token goes as it is
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"negative_data_rejection": {"expected-statuses": REFUSED}},
        }
    )


@pytest.fixture
def api_schema(request: pytest.FixtureRequest, target: Target) -> BaseSchema:
    """The service's own schema; a valid request names a real object two times in three."""
    # schemathesis 4.32 (from_fixture) reads `node._nodeid`, which pytest 9.2 no longer has (it
    # keeps `_id`); it only names the per-operation subtests, so the node's own id will do.
    request.node.__dict__.setdefault("_nodeid", request.node.nodeid)
    schema = schemathesis.openapi.from_url(
        f"{target.site.service.base}/openapi.json", config=_config()
    )

    def real_ids(
        _context: schemathesis.HookContext, case: Case[Any]
    ) -> st.SearchStrategy[Case[Any]]:
        if not case.path_parameters or case.meta is None or case.meta.generation.mode.is_negative:
            return st.just(case)

        def named(objects: dict[str, str] | None) -> Case[Any]:
            if objects is not None:  # inst-1's (all roles see it) or inst-2's (the centre's)
                case.path_parameters = {
                    key: objects.get(key, value) for key, value in case.path_parameters.items()
                }
            return case

        return st.sampled_from([None, *target.objects]).map(named)

    schema.hook("flatmap_case")(real_ids)
    return schema


# Every operation under /api but the endless live stream. (The filters go on the lazy schema:
# it replaces those of the fixture's schema.)
fuzzed = (
    schemathesis.pytest.from_fixture("api_schema")
    .include(path_regex="^/api/")
    .exclude(method="GET", path=STREAM)
)


def invalid_input_refused(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Invalid input, one violation at a time (the coverage phase), is refused with one of
    REFUSED: schemathesis' negative_data_rejection. Random invalid input (fuzzing) is held to
    "no 5xx" alone: a query value travels as text, and a number or a list generated for a
    text parameter may arrive as valid text."""
    if ctx.phase != "coverage":
        return None
    result: bool | None = checks.negative_data_rejection(ctx, response, case)
    return result


CHECKED = [
    checks.not_a_server_error,  # no 5xx
    checks.response_schema_conformance,  # a documented answer has its documented shape
    invalid_input_refused,
]


@pytest.mark.timeout(300)  # ~50 s here; room for a loaded machine, and a bound all the same
@fuzzed.parametrize()
def test_no_5xx_and_answers_match_the_schema_for_each_role(case: Case[Any], target: Target) -> None:
    for role, token in target.tokens.items():
        try:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"},
                checks=CHECKED,
                session=target.sessions[role],
                timeout=15,
            )
        except BaseException as exc:
            exc.add_note(f"as {role}")
            raise


def _report(**fields: Any) -> dict[str, Any]:
    """The body of a valid hazard report, with these fields changed."""
    return {
        "source": "self_inspection",
        "institution": "inst-1",
        "category": "escape_route_blocked",
        "title": "疏散通道堵塞",
        "due_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
        **fields,
    }


def _json(text: str) -> dict[str, Any]:
    """A JSON body as these bytes (httpx will not encode a lone surrogate)."""
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


def _multipart(disposition: bytes, content_type: bytes) -> dict[str, Any]:
    """An upload as these bytes (httpx escapes a NUL in a file name)."""
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; ' + disposition + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n\r\nphoto\r\n--x--\r\n"
    )
    return {"content": body, "headers": {"Content-Type": "multipart/form-data; boundary=x"}}


BIG = "99999999999999999999"  # past 64 bits
NUL = "\x00"  # PostgreSQL can neither store nor compare it
_JSON = {"Content-Type": "application/json"}
_MULTIPART = {"Content-Type": "multipart/form-data"}  # no boundary
_TEXT = {"Content-Type": "text/plain"}


def _malformed(mine: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, keyword arguments of httpx.request) of malformed requests."""
    ticket = f"/api/v1/tickets/{mine['ticket_id']}"
    ack = f"/api/v1/alerts/{mine['alert_id']}/ack"
    return [
        # Integers past 64 bits (SQLite: OverflowError; PostgreSQL: bigint out of range).
        ("GET", "/api/v1/tickets", {"params": {"offset": BIG}}),
        ("GET", "/api/v1/alerts", {"params": {"offset": str(2**63)}}),
        ("GET", "/api/v1/dead-letters", {"params": {"before_id": BIG}}),
        ("GET", "/api/v1/dead-letters", {"params": {"before_id": f"-{BIG}"}}),
        # Dates: not in UTC's calendar once converted, a number, months at the calendar's ends.
        ("GET", "/api/v1/tickets", {"params": {"found_from": "0001-01-01T00:00:00+01:00"}}),
        ("GET", "/api/v1/tickets", {"params": {"found_before": "9999-12-31T23:59:59-01:00"}}),
        ("GET", "/api/v1/tickets", {"params": {"found_from": "0.5"}}),
        ("POST", "/api/v1/tickets", {"json": _report(due_at=0)}),
        ("POST", "/api/v1/tickets", {"json": _report(found_at="0001-01-01T00:00:00+00:01")}),
        ("POST", "/api/v1/tickets", {"json": _report(due_at="9999-12-31T23:59:59-23:59")}),
        ("GET", "/api/v1/reports/ledger", {"params": {"month": "9999-12"}}),
        ("GET", "/api/v1/reports/dispatch", {"params": {"month": "0001-01", "format": "xlsx"}}),
        ("GET", "/api/v1/reports/ledger", {"params": {"month": "٢٠٢٦-١١"}}),
        # NUL in a path, a query, a body, a form field, an uploaded file's name and type.
        ("GET", "/api/v1/tickets/a%00b", {}),
        ("GET", "/api/v1/alerts/%00", {}),
        ("GET", "/api/v1/devices/%00", {}),
        ("GET", f"{ticket}/attachments/%00", {}),
        ("POST", "/api/v1/alerts/%00/ack", {"json": {}}),
        ("GET", "/api/v1/alerts", {"params": {"device": NUL, "institution": NUL}}),
        ("GET", "/api/v1/tickets", {"params": {"institution": NUL, "category": NUL}}),
        ("GET", "/api/v1/dead-letters", {"params": {"reason": NUL}}),
        ("POST", "/api/v1/tickets", {"json": _report(title=f"疏散通道{NUL}堵塞")}),
        ("POST", "/api/v1/tickets", {"json": _report(device=f"smoke-1{NUL}")}),
        ("POST", "/api/v1/tickets", {"json": _report(evidence=[{"name": NUL, "url": "http://x"}])}),
        ("POST", f"{ticket}/comment", {"json": {"note": NUL}}),
        ("POST", f"{ticket}/assign", {"json": {"responsible_person": f"王{NUL}工"}}),
        ("POST", ack, {"json": {"note": f"已处理{NUL}"}}),  # was 200: the SQL projection stuck
        (
            "POST",
            f"{ticket}/attachments",
            {"files": {"file": ("a.txt", b"x")}, "data": {"note": NUL}},
        ),
        ("POST", f"{ticket}/attachments", _multipart(b'filename="a\x00.txt"', b"text/plain")),
        ("POST", f"{ticket}/attachments", _multipart(b'filename="a.txt"', b"te\x00xt/plain")),
        # Lone surrogates in JSON (the 422 naming them could not be encoded), broken UTF-8.
        ("POST", "/api/v1/tickets", _json('{"title": "\\ud800"}')),
        ("POST", f"{ticket}/comment", _json('{"note": "\\udfff"}')),
        ("POST", ack, _json('{"note": "\\ud800"}')),
        ("GET", "/api/v1/tickets?device=%ED%B3%BF&institution=%FF", {}),
        ("GET", "/api/v1/tickets/%ED%A0%80", {}),
        ("POST", f"{ticket}/attachments", _multipart(b'filename="\xed\xa0\x80"', b"\xff/\xfe")),
        ("POST", f"{ticket}/comment", {"content": b"\xff\xfe", "headers": _JSON}),
        # Oversize values and odd framing.
        ("GET", "/api/v1/tickets", {"params": {"device": "\U0001f525" * 5000}}),
        ("POST", f"{ticket}/attachments", _multipart(b'filename="' + b"a" * 5000 + b'"', b"")),
        ("POST", f"{ticket}/attachments", {"content": b"--x\r\n", "headers": _MULTIPART}),
        ("POST", f"{ticket}/comment", {"content": b'{"note": 1}', "headers": _TEXT}),
    ]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_malformed_input_is_refused_with_a_reason_never_a_500(
    site_factory: Any, database: str, request: pytest.FixtureRequest
) -> None:
    site = _start(site_factory, request, database)
    wrong = []
    for method, path, kwargs in _malformed(_objects(site, "inst-1", "smoke-1")):
        headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
        url = f"{site.service.base}{path}"
        answer = httpx.request(method, url, headers=headers, timeout=10, **kwargs)
        what = f"{method} {path} {kwargs}: {answer.status_code}"
        if answer.status_code >= 500:
            wrong.append(f"{what} {answer.text[:300]}")
        elif answer.status_code >= 400 and not json.loads(answer.content).get("detail"):
            wrong.append(f"{what} without a reason")
    assert wrong == [], "\n".join(wrong)
    # The SQL projection of alerts took every change (a NUL in a note once stopped it).
    components = site.service.api("GET", "/readyz").json()["components"]
    assert components["alerts-sql"]["state"] == "ok", components["alerts-sql"]


def test_a_malformed_last_event_id_starts_the_stream_from_now(site_factory: Any) -> None:
    site: Site = site_factory()
    url = f"{site.service.base}{STREAM}"
    for value in ("-1", "１２３", "9" * 40, "1e3", "+7", "٣", "0x10", "\u200b", "\xff"):
        headers = {b"Authorization": f"Bearer {TOKEN}".encode(), b"Last-Event-ID": value.encode()}
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=5)) as client,
            client.stream("GET", url, headers=headers) as answer,
        ):
            assert answer.status_code == 200, (value, answer.status_code)
            first = next(answer.iter_bytes())
            assert first.startswith(b": hazardwatch stream"), (value, first)

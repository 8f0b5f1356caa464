"""Who may do what, through the running service (`hazardwatch run`, real Mosquitto, InfluxDB).

1. The authorization matrix: every route of the API (read from the app's OpenAPI schema, so a
   new route without a row here fails), for each role, on an object of the user's own
   institution and on one of another institution, with the expected answer in one table;
   without a token or with an unknown one, 401 (the login excepted: it needs none). The
   roles call with their bearer tokens; sessions are tests/integration/test_login.py's.
2. A tenant who wants its hazard closed without doing the work: every trick the outside review
   found, refused with a reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import TOKEN, ServiceProcess, change
from tests.integration.sites import Site

ROLES = ("admin", "duty_officer", "bureau", "town_office", "institution", "contractor")
SEES_ALL = {"admin", "duty_officer", "bureau"}
ACKNOWLEDGES = {"admin", "duty_officer", "institution"}
REPORTS = {"admin", "duty_officer", "town_office", "institution"}
OK = "ok"  # authorized: 200, 201, 204, or 409 when the state does not allow the step just now
PASSWORD = "the matrix's own passphrase"
# Who logs in for each role (POST /api/v1/session); admin's token is the bootstrap one.
LOGIN_NAMES = {
    "admin": "root",
    "duty_officer": "zhao",
    "bureau": "boss",
    "town_office": "li",
    "institution": "wu",
    "contractor": "wang",
}
PUBLIC = {("POST", "/api/v1/session")}  # open without credentials: the login


def _users(service: ServiceProcess) -> dict[str, str]:
    """A token per role (each user has a password too); the scoped roles see inst-1
    (town_office through its town 城关镇)."""
    service.add_user("root", "admin", password=PASSWORD)
    service.add_user("target", "duty_officer", password=PASSWORD)  # reset and revoked by admin
    return {
        "admin": TOKEN,
        "duty_officer": service.add_user("zhao", "duty_officer", password=PASSWORD),
        "bureau": service.add_user("boss", "bureau", password=PASSWORD),
        "town_office": service.add_user("li", "town_office", "--town", "城关镇", password=PASSWORD),
        "institution": service.add_user(
            "wu", "institution", "--institution", "inst-1", password=PASSWORD
        ),
        "contractor": service.add_user(
            "wang", "contractor", "--institution", "inst-1", password=PASSWORD
        ),
    }


def _seen(role: str, own: bool) -> str | int:
    return OK if own or role in SEES_ALL else 404


def _read(role: str, own: bool) -> str | int:
    return OK


def _see_all_only(role: str, own: bool) -> str | int:
    return OK if role in SEES_ALL else 403


def _acknowledge(role: str, own: bool) -> str | int:
    if not own and role not in SEES_ALL:
        return 404
    return OK if role in ACKNOWLEDGES else 403


def _ticket_step(role: str, own: bool) -> str | int:
    if not own and role not in SEES_ALL:
        return 404
    return 403 if role == "bureau" else OK  # the bureau reads (non-major tickets here)


def _report_hazard(role: str, own: bool) -> str | int:
    if role not in REPORTS:
        return 403
    return OK if own or role in SEES_ALL else 403


def _in_a_session_only(role: str, own: bool) -> str | int:
    return 403  # a password is changed in a session: a bearer token cannot change it


def _admin_only(role: str, own: bool) -> str | int:
    return OK if role == "admin" else 403


def _audit_readers(role: str, own: bool) -> str | int:
    return OK if role in {"admin", "bureau"} else 403


Expect = Callable[[str, bool], "str | int"]

# (method, path) -> the expected answer for (role, own institution or not)
MATRIX: dict[tuple[str, str], Expect] = {
    ("GET", "/api/v1/alerts"): _read,
    ("GET", "/api/v1/alerts/{alert_id}"): _seen,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): _acknowledge,
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): _acknowledge,
    ("GET", "/api/v1/devices"): _read,
    ("GET", "/api/v1/devices/{device_id}"): _seen,
    ("GET", "/api/v1/devices/{device_id}/readings"): _seen,
    ("GET", "/api/v1/institutions"): _read,
    ("GET", "/api/v1/institutions/{institution_id}"): _seen,
    ("GET", "/api/v1/dead-letters"): _see_all_only,
    ("GET", "/api/v1/tickets"): _read,
    ("POST", "/api/v1/tickets"): _report_hazard,
    ("GET", "/api/v1/tickets/{ticket_id}"): _seen,
    ("POST", "/api/v1/tickets/{ticket_id}/assign"): _ticket_step,
    ("POST", "/api/v1/tickets/{ticket_id}/start"): _ticket_step,
    ("POST", "/api/v1/tickets/{ticket_id}/rectified"): _ticket_step,
    ("POST", "/api/v1/tickets/{ticket_id}/verify"): _ticket_step,
    ("POST", "/api/v1/tickets/{ticket_id}/reject"): _ticket_step,
    ("POST", "/api/v1/tickets/{ticket_id}/reopen"): _ticket_step,
    ("POST", "/api/v1/tickets/{ticket_id}/comment"): _ticket_step,
    ("POST", "/api/v1/tickets/{ticket_id}/attachments"): _ticket_step,
    ("GET", "/api/v1/tickets/{ticket_id}/attachments/{sha256}"): _seen,
    ("GET", "/api/v1/reports/{report}"): _read,
    ("GET", "/api/v1/stream"): _read,
    ("POST", "/api/v1/session"): _read,  # each logs in with their own name and password
    ("GET", "/api/v1/session"): _read,
    ("DELETE", "/api/v1/session"): _read,  # 204: a token's caller has no session to end
    ("POST", "/api/v1/session/password"): _in_a_session_only,
    ("GET", "/api/v1/audit"): _audit_readers,
    ("GET", "/api/v1/users"): _admin_only,
    ("POST", "/api/v1/users"): _admin_only,
    ("POST", "/api/v1/users/{name}/password"): _admin_only,
    ("DELETE", "/api/v1/users/{name}"): _admin_only,
}

SOURCE = {
    "admin": "self_inspection",
    "duty_officer": "supervisory_inspection",
    "bureau": "supervisory_inspection",
    "town_office": "supervisory_inspection",
    "institution": "self_inspection",
    "contractor": "self_inspection",
}


def _due(days: float = 3) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _request(
    service: ServiceProcess,
    method: str,
    path: str,
    objects: dict[str, str],
    role: str,
    token: str | None,
) -> int:
    """The status of one request of the matrix, with a body that passes validation."""
    url = path.format(
        **objects, report="ledger", institution_id=objects["institution"], name="target"
    )
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, Any] = {}
    params: dict[str, str] = {}
    if url.endswith("/attachments"):
        kwargs["files"] = {"file": ("现场照片.jpg", b"\xff\xd8 photo of the matrix", "image/jpeg")}
    elif url == "/api/v1/tickets" and method == "POST":
        kwargs["json"] = {
            "source": SOURCE[role],
            "institution": objects["institution"],
            "category": "escape_route_blocked",
            "title": "疏散通道堵塞",
            "due_at": _due(),
        }
    elif url.endswith("/rectified"):
        kwargs["json"] = {"measures": "清理通道"}
    elif url.endswith("/assign"):
        kwargs["json"] = {"responsible_person": "王工"}
    elif url == "/api/v1/session" and method == "POST":
        kwargs["json"] = {"username": LOGIN_NAMES[role], "password": PASSWORD}
    elif url == "/api/v1/users" and method == "POST":
        kwargs["json"] = {
            "name": "newcomer",
            "display_name": "新同事",
            "role": "institution",
            "institutions": [objects["institution"]],
            "password": "a newcomer's long passphrase",
        }
    elif url == "/api/v1/users/target/password":
        kwargs["json"] = {"password": "the target's new passphrase"}
    elif url == "/api/v1/session/password":
        kwargs["json"] = {"old": PASSWORD, "new": "another long passphrase"}
    elif method == "POST":
        kwargs["json"] = {"note": "矩阵"}
    if path.startswith("/api/v1/reports"):
        params["month"] = datetime.now(UTC).strftime("%Y-%m")
    if path == "/api/v1/stream":  # answers, then streams: the status is all we need
        with httpx.stream("GET", f"{service.base}{url}", headers=headers, timeout=10) as answer:
            return answer.status_code
    answer = httpx.request(
        method, f"{service.base}{url}", headers=headers, params=params, timeout=10, **kwargs
    )
    assert answer.status_code not in (422, 500), (method, url, role, answer.text)
    return answer.status_code


def _objects(site: Site, institution: str, device: str) -> dict[str, str]:
    """An alert, a sensor ticket and an uploaded file of this institution (made by admin)."""
    site.send(device, "event", {"type": "fault", "code": "sensor_fault"}, institution=institution)
    alert = site.stream.wait_for(change("raised", "device_fault", device), "the fault")["alert"]

    def ticket() -> list[dict[str, Any]]:
        found = site.service.api("GET", "/api/v1/tickets", params={"device": device}).json()
        assert isinstance(found, list)
        return found

    wait_until(lambda: len(ticket()) == 1, timeout=10, what=f"the ticket of {device}")
    ticket_id = ticket()[0]["id"]
    content = f"evidence of {institution}".encode()
    uploaded = site.service.api(
        "POST",
        f"/api/v1/tickets/{ticket_id}/attachments",
        files={"file": ("证据.txt", content, "text/plain")},
    )
    assert uploaded.status_code == 201, uploaded.text
    return {
        "institution": institution,
        "device_id": device,
        "alert_id": alert["id"],
        "ticket_id": ticket_id,
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def test_every_route_answers_each_role_as_the_matrix_says(site_factory: Any) -> None:
    site: Site = site_factory()
    service = site.service
    routes = {
        (method.upper(), path)
        for path, operations in service.api("GET", "/openapi.json").json()["paths"].items()
        if path.startswith("/api/")
        for method in operations
    }
    assert routes - MATRIX.keys() == set(), "a route without a row in the matrix"
    assert MATRIX.keys() - routes == set(), "a row for a route that is gone"

    tokens = _users(service)
    objects = {
        True: _objects(site, "inst-1", "smoke-1"),
        False: _objects(site, "inst-2", "smoke-21"),
    }
    wrong: list[str] = []
    for (method, path), expect in MATRIX.items():
        stranger = (200,) if (method, path) in PUBLIC else (401,)
        for token, label in ((None, "no token"), ("x" * 43, "unknown token")):
            got = _request(service, method, path, objects[True], "admin", token)
            if got not in stranger:
                wrong.append(f"{method} {path} with {label}: {got}, expected {stranger[0]}")
        for role in ROLES:
            for own in (True, False):
                expected = expect(role, own)
                got = _request(service, method, path, objects[own], role, tokens[role])
                passed = got in (200, 201, 204, 409) if expected == OK else got == expected
                if not passed:
                    whose = "own" if own else "other"
                    wrong.append(f"{method} {path} as {role} ({whose}): {got}, expected {expected}")
    assert wrong == [], "\n".join(wrong)


def test_a_tenant_cannot_run_its_own_hazard_through_the_loop(site_factory: Any) -> None:
    site: Site = site_factory()
    service = site.service
    wu = service.add_user("wu", "institution", "--institution", "inst-1")
    wu2 = service.add_user("wu2", "institution", "--institution", "inst-1")
    wang = service.add_user("wang", "contractor", "--institution", "inst-1")
    li = service.add_user("li", "town_office", "--town", "城关镇")

    def report(token: str, **fields: Any) -> httpx.Response:
        body = {
            "source": "self_inspection",
            "institution": "inst-1",
            "category": "fire_door_blocked",
            "title": "常闭式防火门处于常开状态",
            "due_at": _due(),
            **fields,
        }
        return service.api("POST", "/api/v1/tickets", token=token, json=body)

    def refused(answer: httpx.Response, code: int, reason: str) -> None:
        assert answer.status_code == code, answer.text
        assert reason in str(answer.json()["detail"]), answer.text

    # Every object a request names is checked: a ticket naming another institution's device
    # (which would then capture that device's sensor alerts) is refused, for anyone.
    for token in (wu, TOKEN):
        refused(report(token, device="smoke-21"), 422, "no device 'smoke-21' in institution")
    site.send("smoke-21", "event", {"type": "fault", "code": "sensor_fault"}, institution="inst-2")
    site.stream.wait_for(change("raised", "device_fault", "smoke-21"), "the other home's fault")
    wait_until(
        lambda: (
            len(service.api("GET", "/api/v1/tickets", params={"device": "smoke-21"}).json()) == 1
        ),
        timeout=10,
        what="the other home's own ticket",
    )
    mine = service.api("GET", "/api/v1/tickets", token=wu).json()
    assert mine == [], "nothing of inst-2 reached inst-1"

    # The source follows the role; verification is not the tenant's to waive.
    refused(report(wu, source="supervisory_inspection"), 403, "reports hazards as self_inspection")
    refused(report(wu, source="public_report"), 403, "reports hazards as self_inspection")
    refused(report(wang), 403, "does not report hazards")
    refused(report(wu, verification_required=False), 403, "only the supervising side")
    refused(
        report(li, source="supervisory_inspection", major_hazard=True, verification_required=False),
        422,
        "always verified on site",
    )
    waived = report(li, source="supervisory_inspection", verification_required=False)
    assert waived.status_code == 201, waived.text

    # Times: no deadline years ahead, nothing found tomorrow, no time without its offset.
    refused(report(wu, due_at=_due(days=5 * 365)), 422, "at most 180 days ahead")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    refused(report(wu, found_at=tomorrow, due_at=_due(days=4)), 422, "in the future")
    refused(report(wu, due_at="2026-12-10T10:00:00"), 422, "timezone")
    refused(report(wu, due_at="next week"), 422, "datetime")
    # Server-set fields cannot be sent.
    for field, value in (("verified_by", "wu2"), ("closed_at", _due()), ("status", "closed")):
        refused(report(wu, **{field: value}), 422, "Extra inputs are not permitted")

    # A major hazard the home found itself: it works on it, but neither a second account of
    # the home nor its contractor can verify it; the town office does, on site.
    major = report(wu, major_hazard=True, title="厨房燃气管道锈蚀")
    assert major.status_code == 201, major.text
    path = f"/api/v1/tickets/{major.json()['id']}"
    for step, body in (
        ("assign", {"responsible_person": "王工"}),
        ("start", {}),
        ("rectified", {"measures": "更换燃气管道"}),
    ):
        done = service.api("POST", f"{path}/{step}", token=wu, json=body)
        assert done.status_code == 200, done.text
    for token in (wu2, wang):
        for step in ("verify", "reject"):
            refused(service.api("POST", f"{path}/{step}", token=token, json={}), 403, "major")
    assert service.api("GET", path, token=wu).json()["status"] == "awaiting_verification"
    verified = service.api("POST", f"{path}/verify", token=li, json={"note": "现场核查合格"})
    assert verified.status_code == 200, verified.text
    closed = verified.json()
    assert (closed["status"], closed["verified_by"]) == ("closed", "li")


def test_live_streams_are_limited_and_end_when_their_user_is_revoked(site_factory: Any) -> None:
    site: Site = site_factory(
        HAZARDWATCH_STREAM__MAX_PER_USER="2", HAZARDWATCH_STREAM__MAX_TOTAL="4"
    )
    service = site.service  # the site's own reader holds one of the admin's streams
    zhao = service.add_user("zhao", "duty_officer")
    li = service.add_user("li", "town_office", "--town", "城关镇")
    url = f"{service.base}/api/v1/stream"

    def open_stream(token: str) -> tuple[httpx.Client, httpx.Response]:
        client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        request = client.build_request("GET", url, headers={"Authorization": f"Bearer {token}"})
        return client, client.send(request, stream=True)

    held = [open_stream(zhao), open_stream(zhao)]
    assert [answer.status_code for _, answer in held] == [200, 200]
    client, third = open_stream(zhao)
    assert third.status_code == 429, third.status_code
    assert "2 live streams open" in third.read().decode()
    client.close()
    # Total: the site's reader (admin) and zhao's two leave one place; li takes it.
    held.append(open_stream(li))
    assert held[-1][1].status_code == 200
    client, over = open_stream(li)
    assert over.status_code == 429 and "4 live streams open" in over.read().decode()
    client.close()
    held.pop(0)[0].close()  # zhao closes a tab: the place comes back

    def reopened() -> bool:
        client, answer = open_stream(zhao)
        client.close()
        return answer.status_code == 200

    wait_until(reopened, timeout=10, what="the closed stream's place to be free again")

    # Revoked: zhao's open stream ends (within the token cache and the stream's recheck).
    lines: list[str] = []
    ended = threading.Event()
    _, answer = held[0]

    def read() -> None:
        with contextlib.suppress(httpx.HTTPError):
            lines.extend(answer.iter_lines())
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    service.hazardwatch("user", "revoke", "zhao")
    assert ended.wait(30), "the revoked user's stream is still open"
    assert ": the token was revoked" in lines
    assert service.api("GET", "/api/v1/alerts", token=zhao).status_code == 401
    for client, _ in held:
        client.close()

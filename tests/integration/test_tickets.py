"""The hazard ledger end to end: a detector's fault through MQTT becomes a ticket that follows
the closed loop through the API (`hazardwatch run` against real Mosquitto, InfluxDB and, for
one run, PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import StreamReader, change, ticket_of
from tests.integration.sites import Site
from tests.integration.webhooks import WebhookReceiver
from tests.servers import Postgres, require_binary


def tickets_of(site: Site, **params: str) -> list[dict[str, Any]]:
    response = site.service.api("GET", "/api/v1/tickets", params=params)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def ticket_events(site: Site) -> list[dict[str, Any]]:
    return [body for _, event, body in site.stream.events if event == "ticket"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_device_fault_travels_from_mqtt_to_a_ticket_and_round_the_loop(
    site_factory: Any, database: str, request: pytest.FixtureRequest
) -> None:
    env = {}
    if database == "postgresql":
        postgres: Postgres = request.getfixturevalue("postgres")
        env["HAZARDWATCH_DATABASE_URL"] = postgres.create_database(f"tk_{uuid.uuid4().hex[:8]}")
    site: Site = site_factory(**env)
    site.send("smoke-1", "event", {"type": "fault", "code": "sensor_fault", "detail": "光室故障"})
    alert = site.stream.wait_for(change("raised", "device_fault", "smoke-1"), "the fault")["alert"]
    wait_until(lambda: len(tickets_of(site)) == 1, timeout=10, what="the ticket")
    (ticket,) = tickets_of(site)
    assert (ticket["category"], ticket["status"], ticket["source"]) == (
        "device_fault",
        "open",
        "sensor",
    )
    assert (ticket["institution"], ticket["device"], ticket["alert_ids"]) == (
        "inst-1",
        "smoke-1",
        [alert["id"]],
    )
    assert ticket["responsible_unit"] == "消防设施维保单位", "the policy routes faults"
    due = datetime.fromisoformat(ticket["due_at"])
    found = datetime.fromisoformat(ticket["found_at"])
    assert timedelta(hours=71) < due - found < timedelta(hours=73)
    opened = site.stream.wait_for(ticket_of(alert["id"]), "the ticket's event", kind="ticket")
    assert opened["ticket"]["id"] == ticket["id"] and opened["actor"] == "system"
    (shown,) = site.service.alerts(kind="device_fault")
    assert shown["ticket_id"] == ticket["id"], "the alert names its ticket"

    # A second fault code of the same detector joins the same ticket.
    site.send("smoke-1", "event", {"type": "fault", "code": "chamber_dirty"})
    wait_until(lambda: tickets_of(site)[0]["occurrences"] == 2, timeout=10, what="the second alert")
    assert len(tickets_of(site)) == 1

    path = f"/api/v1/tickets/{ticket['id']}"
    steps = [
        ("assign", {"responsible_person": "王工", "note": "派维保"}, "assigned"),
        ("start", {}, "rectifying"),
        (
            "rectified",
            {
                "measures": "更换探测器并清洁光室",
                "evidence": [{"name": "更换照片", "url": "https://files.example/p/1.jpg"}],
            },
            "awaiting_verification",
        ),
    ]
    for name, body, status in steps:
        response = site.service.api("POST", f"{path}/{name}", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
    # The rectifier may not sign the verification (谁检查、谁签名、谁负责).
    refused = site.service.api("POST", f"{path}/verify", json={"note": "自己验收"})
    assert refused.status_code == 409 and "cannot also verify" in refused.json()["detail"]
    wrong = site.service.api("POST", f"{path}/start")
    assert wrong.status_code == 409 and "cannot be started" in wrong.json()["detail"]

    # The faults clear while the ticket waits: recorded, the status stays for the person.
    site.send("smoke-1", "event", {"type": "fault_clear", "code": "sensor_fault"})
    site.send("smoke-1", "event", {"type": "fault_clear", "code": "chamber_dirty"})
    wait_until(
        lambda: (
            [e["action"] for e in site.service.api("GET", path).json()["events"]][-1] == "cleared"
        ),
        timeout=10,
        what="the clearing in the audit trail",
    )
    detail = site.service.api("GET", path).json()
    assert detail["status"] == "awaiting_verification"
    trail = [(e["action"], e["actor"], e["status"]) for e in detail["events"]]
    assert trail[:5] == [
        ("opened", "system", "open"),
        ("attached", "system", "open"),
        ("assigned", "admin", "assigned"),
        ("started", "admin", "rectifying"),
        ("rectified", "admin", "awaiting_verification"),
    ]
    assert detail["events"][4]["evidence"][0]["url"] == "https://files.example/p/1.jpg"
    assert detail["measures"] == "更换探测器并清洁光室"
    assert detail["responsible_person"] == "王工"
    seen = [(e["action"], e["ticket"]["id"]) for e in ticket_events(site)]
    assert ("opened", ticket["id"]) in seen and ("rectified", ticket["id"]) in seen


def test_hazards_from_the_other_channels_enter_the_same_ledger(site_factory: Any) -> None:
    site: Site = site_factory()
    due = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    response = site.service.api(
        "POST",
        "/api/v1/tickets",
        json={
            "source": "supervisory_inspection",
            "institution": "inst-1",
            "category": "fire_exit",
            "title": "安全出口堵塞",
            "description": "二楼东侧安全出口堆放杂物",
            "due_at": due,
            "major_hazard": False,  # a major hazard is always verified (test_authorization)
            "verification_required": False,
        },
    )
    assert response.status_code == 201, response.text
    ticket = response.json()
    assert (ticket["source"], ticket["reported_by"], ticket["responsible_person"]) == (
        "supervisory_inspection",
        "admin",
        "李四",
    )
    path = f"/api/v1/tickets/{ticket['id']}"
    site.service.api("POST", f"{path}/assign", json={})
    site.service.api("POST", f"{path}/start")
    done = site.service.api("POST", f"{path}/rectified", json={"measures": "清理杂物"}).json()
    assert done["status"] == "closed", "no on-site verification required for this one"
    assert done["closed_at"] is not None

    unknown = site.service.api(
        "POST",
        "/api/v1/tickets",
        json={
            "source": "public_report",
            "institution": "nowhere",
            "category": "other",
            "title": "x",
            "due_at": due,
        },
    )
    assert unknown.status_code == 422
    sensor = site.service.api(
        "POST",
        "/api/v1/tickets",
        json={
            "source": "sensor",
            "institution": "inst-1",
            "category": "x",
            "title": "x",
            "due_at": due,
        },
    )
    assert sensor.status_code == 422, "sensor tickets come from alerts only"

    listed = site.service.api(
        "GET", "/api/v1/tickets", params={"source": "supervisory_inspection", "status": "closed"}
    )
    assert listed.headers["X-Total-Count"] == "1"
    assert [t["id"] for t in listed.json()] == [ticket["id"]]
    assert site.service.api("GET", "/api/v1/tickets/nope").status_code == 404
    assert site.service.api("GET", "/api/v1/tickets", params={"status": "bogus"}).status_code == 422


def test_two_people_close_the_loop_and_each_sees_only_what_is_theirs(
    site_factory: Any, receiver: WebhookReceiver
) -> None:
    receiver.start()
    hooks = [{"name": "duty", "url": receiver.url("/duty")}]
    site: Site = site_factory(
        HAZARDWATCH_ALERTS__WEBHOOKS=json.dumps(hooks),
        HAZARDWATCH_TICKETS__ATTACHMENT_MAX_MB="0.01",  # 10 KiB, to see the limit refuse
        HAZARDWATCH_TICKETS__ATTACHMENT_QUOTA_MB="0.008",  # 8 KiB of files per institution
    )
    service = site.service
    wang = service.add_user("wang", "contractor", "--institution", "inst-1")
    zhao = service.add_user("zhao", "duty_officer")
    east = service.add_user("east", "institution", "--institution", "inst-2")
    town = service.add_user("dongcheng", "town_office", "--town", "东城街道")
    boss = service.add_user("boss", "bureau")
    east_stream = StreamReader(service, east)

    site.send("smoke-1", "event", {"type": "fault", "code": "sensor_fault"})
    wait_until(lambda: len(tickets_of(site)) == 1, timeout=10, what="the ticket")
    (ticket,) = tickets_of(site)
    path = f"/api/v1/tickets/{ticket['id']}"

    for name, body in (("assign", {"responsible_person": "王工"}), ("start", {})):
        assert service.api("POST", f"{path}/{name}", wang, json=body).status_code == 200

    # The contractor keeps a photo of the repair with the ticket, and cites it when done.
    photo = b"\xff\xd8\xff\xe0" + os.urandom(3000)
    upload = service.api(
        "POST",
        f"{path}/attachments",
        wang,
        files={"file": ("更换后照片.jpg", photo, "image/jpeg")},
        data={"note": "更换后"},
    )
    assert upload.status_code == 201, upload.text
    evidence = upload.json()
    assert evidence["sha256"] == hashlib.sha256(photo).hexdigest()
    assert (evidence["name"], evidence["size"], evidence["content_type"]) == (
        "更换后照片.jpg",
        len(photo),
        "image/jpeg",
    )
    assert (Path(service.env["HAZARDWATCH_DATA_DIR"]) / evidence["path"]).read_bytes() == photo
    big = service.api("POST", f"{path}/attachments", wang, files={"file": ("a.bin", bytes(11000))})
    assert big.status_code == 413, big.text
    again = service.api(
        "POST", f"{path}/attachments", wang, files={"file": ("更换后照片.jpg", photo, "image/jpeg")}
    )
    assert again.status_code == 201, "a file the institution keeps already costs nothing"
    second = os.urandom(6000)  # 3 KiB + 6 KiB > the institution's 8 KiB
    over = service.api("POST", f"{path}/attachments", wang, files={"file": ("b.jpg", second)})
    assert over.status_code == 413 and "quota" in over.json()["detail"], over.text
    stranger = {"sha256": hashlib.sha256(b"elsewhere").hexdigest()}
    cited = service.api("POST", f"{path}/comment", wang, json={"evidence": [stranger]})
    assert cited.status_code == 422 and "upload it first" in cited.text
    assert (
        service.api("POST", f"{path}/attachments", boss, files={"file": photo}).status_code == 403
    )
    done = service.api(
        "POST",
        f"{path}/rectified",
        wang,
        json={"measures": "更换探测器", "evidence": [{"sha256": evidence["sha256"]}]},
    )
    assert done.json()["rectified_by"] == "wang"
    own = service.api("POST", f"{path}/verify", wang)
    assert own.status_code == 409, "the rectifier does not verify"
    assert service.api("POST", f"{path}/verify", boss).status_code == 403, "the bureau reads"
    closed = service.api("POST", f"{path}/verify", zhao, json={"note": "现场核查合格"}).json()
    assert (closed["status"], closed["verified_by"]) == ("closed", "zhao")
    events = service.api("GET", path).json()["events"]
    trail = [(e["action"], e["actor"]) for e in events]
    assert trail == [
        ("opened", "system"),
        ("assigned", "wang"),
        ("started", "wang"),
        ("commented", "wang"),
        ("commented", "wang"),  # the same photo again: a step, no second copy, no quota
        ("rectified", "wang"),
        ("verified", "zhao"),
    ]
    assert events[3]["note"] == "更换后" and events[3]["evidence"] == [evidence]
    assert events[5]["evidence"] == [evidence], "the rectification cites the stored photo"
    # The verifier (and the bureau, read-only) open it from the ledger; nobody else can.
    for reader in (zhao, boss):
        got = service.api("GET", f"{path}/attachments/{evidence['sha256']}", reader)
        assert got.status_code == 200 and got.content == photo
        assert got.headers["content-type"] == "image/jpeg"
        assert "filename*=utf-8''%E6%9B%B4" in got.headers["content-disposition"]
        assert got.headers["content-disposition"].startswith("inline")
        assert "sandbox" in got.headers["content-security-policy"]
        assert got.headers["x-frame-options"] == "DENY"
    # A file its uploader calls a PDF or a web page is downloaded as bytes, never shown here.
    for name, declared in (("检查表.pdf", "application/pdf"), ("x.html", "text/html")):
        stored = service.api(
            "POST",
            f"{path}/attachments",
            zhao,
            files={"file": (name, b"<script>alert(1)</script>", declared)},
        ).json()
        got = service.api("GET", f"{path}/attachments/{stored['sha256']}", zhao)
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment")
        assert got.headers["x-content-type-options"] == "nosniff"

    # The duty group heard of the ticket through the webhooks: opened, rectified, verified.
    def ticket_notices() -> list[str]:
        return [b["action"] for _, _, b in receiver.received if "ticket" in b]

    wait_until(lambda: len(ticket_notices()) == 3, timeout=15, what="3 ticket notices")
    assert ticket_notices() == ["opened", "rectified", "verified"]
    assert {b["ticket"]["id"] for _, _, b in receiver.received if "ticket" in b} == {ticket["id"]}

    # Another institution's people see none of it: not the ticket, not the alert.
    for token in (east, town):
        assert service.api("GET", "/api/v1/tickets", token).json() == []
        assert service.api("GET", path, token).status_code == 404
        assert service.api("POST", f"{path}/reopen", token).status_code == 404
        download = f"{path}/attachments/{evidence['sha256']}"
        assert service.api("GET", download, token).status_code == 404
        assert service.api("GET", "/api/v1/alerts", token).json() == []
        assert service.api("GET", "/api/v1/devices/smoke-1", token).status_code == 404
    assert service.api("GET", "/api/v1/dead-letters", east).status_code == 403
    assert len(service.api("GET", "/api/v1/tickets", boss).json()) == 1

    # ... and their stream carries only their institution's changes.
    site.send("smoke-21", "event", {"type": "alarm", "source": "smoke"}, institution="inst-2")
    east_stream.wait_for(change("raised", "smoke_alarm", "smoke-21"), "inst-2's alarm")
    assert {b["alert"]["institution"] for b in east_stream.alert_changes()} == {"inst-2"}
    assert [a["device"] for a in service.api("GET", "/api/v1/alerts", town).json()] == ["smoke-21"]
    assert service.api("GET", "/api/v1/devices/smoke-21", east).status_code == 200

    east_stream.close()
    service.hazardwatch("user", "revoke", "wang")  # from another process: within 10 s
    wait_until(
        lambda: service.api("GET", "/api/v1/tickets", wang).status_code == 401,
        timeout=15,
        what="the revoked token to be refused",
    )


def test_the_monthly_reports_through_the_api_cover_only_the_users_institutions(
    site_factory: Any,
) -> None:
    site: Site = site_factory()
    service = site.service
    east = service.add_user("east", "institution", "--institution", "inst-2")
    due = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    for institution, title in (("inst-1", "安全出口堵塞"), ("inst-2", "灭火器过期")):
        response = service.api(
            "POST",
            "/api/v1/tickets",
            json={
                "source": "self_inspection",
                "institution": institution,
                "category": "other",
                "title": title,
                "due_at": due,
            },
        )
        assert response.status_code == 201, response.text
    month = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    everything = service.api("GET", "/api/v1/reports/ledger", params={"month": month}).json()
    assert sorted(row[3] for row in everything["rows"]) == ["安全出口堵塞", "灭火器过期"]
    mine = service.api("GET", "/api/v1/reports/ledger", east, params={"month": month}).json()
    assert [row[3] for row in mine["rows"]] == ["灭火器过期"]
    dispatch = service.api(
        "GET", "/api/v1/reports/dispatch", east, params={"month": month, "lang": "en"}
    ).json()
    assert dispatch["rows"][-1][:3] == ["Total", "", 1]
    xlsx = service.api("GET", "/api/v1/reports/dispatch", params={"month": month, "format": "xlsx"})
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    assert "attachment" in xlsx.headers["content-disposition"]
    csv_body = service.api(
        "GET", "/api/v1/reports/ledger", params={"month": month, "format": "csv"}
    )
    assert csv_body.content.startswith("\ufeff".encode()) and "隐患描述" in csv_body.text
    bad = service.api("GET", "/api/v1/reports/ledger", params={"month": "2026-13"})
    assert bad.status_code == 422
    # The CLI writes the same table.
    out = service.env["HAZARDWATCH_DATA_DIR"] + "/ledger.csv"
    printed = service.hazardwatch("report", "ledger", "--month", month, "--output", out)
    assert "2 rows" in printed


def test_no_ticket_is_lost_while_the_database_is_away_or_the_service_crashes(
    site_factory: Any, tmp_path: Path
) -> None:
    require_binary("postgres")
    database = Postgres(tmp_path / "own-postgres").start()  # this test stops it
    try:
        site: Site = site_factory(HAZARDWATCH_DATABASE_URL=database.create_database("outage"))
        fault = {"type": "fault", "code": "sensor_fault"}
        site.send("smoke-1", "event", fault)
        wait_until(lambda: len(tickets_of(site)) == 1, timeout=10, what="the first ticket")

        # The database goes away: the alarms still reach the duty officer at once ...
        database.stop()
        site.send("smoke-2", "event", fault)
        site.send("smoke-9", "event", {"type": "tamper"})
        site.stream.wait_for(change("raised", "device_fault", "smoke-2"), "smoke-2's fault")
        site.stream.wait_for(change("raised", "tamper", "smoke-9"), "smoke-9's tamper")
        # ... and their tickets follow when it is back.
        database.start()
        wait_until(lambda: len(tickets_of(site)) == 3, timeout=30, what="the missed tickets")

        # Away again, and the service crashes before it could store the alert.
        database.stop()
        site.send("smoke-21", "event", fault, institution="inst-2")
        site.stream.wait_for(change("raised", "device_fault", "smoke-21"), "smoke-21's fault")
        site.stream.close()
        site.service.kill()
        database.start()
        site.service.start()
        site.stream = StreamReader(site.service)
        wait_until(lambda: len(tickets_of(site)) == 4, timeout=30, what="the crashed one's")

        # So many faults, so many tickets: one per device, each alert in exactly one ticket.
        tickets = tickets_of(site)
        assert sorted((t["device"], t["category"]) for t in tickets) == [
            ("smoke-1", "device_fault"),
            ("smoke-2", "device_fault"),
            ("smoke-21", "device_fault"),
            ("smoke-9", "tamper"),
        ]
        alert_ids = [a for t in tickets for a in t["alert_ids"]]
        assert len(alert_ids) == len(set(alert_ids)) == 4
        alerts = site.service.alerts()
        assert sorted(a["id"] for a in alerts) == sorted(alert_ids), "no alert twice"
        wait_until(
            lambda: all(a["ticket_id"] for a in site.service.alerts()),
            timeout=15,
            what="every alert to show its ticket",
        )
        assert all(t["occurrences"] == 1 for t in tickets)
    finally:
        database.cleanup()

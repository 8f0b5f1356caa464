"""Alerts end to end: `hazardwatch run` against real Mosquitto and InfluxDB (and PostgreSQL).

Detectors publish through the broker; the alerts are read where a duty officer and other
systems read them: the live stream, the API, retained MQTT messages, InfluxDB and webhooks.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import TOKEN, change, ticket_of
from tests.integration.sites import TOPIC, Site
from tests.integration.webhooks import WebhookReceiver
from tests.servers import InfluxDB1, Postgres


def retained_alerts(broker_url: str, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
    """The retained messages under hazardwatch/alerts/#, by topic (payload decoded)."""
    found: dict[str, dict[str, Any]] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"look-{uuid.uuid4().hex[:8]}")

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain and message.payload:
            found[message.topic] = json.loads(message.payload)

    client.on_message = on_message
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.subscribe("hazardwatch/alerts/#", qos=1)
    client.loop_start()
    time.sleep(timeout)  # retained messages come at once; this waits out the slowest
    client.loop_stop()
    client.disconnect()
    return found


def test_fire_in_one_zone_raises_smoke_alarms_then_fire_confirmed(
    site_factory: Any, influxdb: InfluxDB1, influx_db: str
) -> None:
    site: Site = site_factory()
    stream = site.stream
    site.send("smoke-9", "event", {"type": "alarm", "source": "smoke"})  # another zone
    stream.wait_for(change("raised", "smoke_alarm", "smoke-9"), "smoke-9's alarm")
    site.send("smoke-1", "event", {"type": "alarm", "source": "smoke", "detail": "2.1 dB/m"})
    stream.wait_for(change("raised", "smoke_alarm", "smoke-1"), "smoke-1's alarm")
    time.sleep(0.5)
    assert not [b for b in stream.alert_changes() if b["alert"]["kind"] == "fire_confirmed"], (
        "one detector per zone is no confirmation"
    )
    # The second detector of zone 2F-east alarms on its readings: two at the threshold.
    site.send("smoke-2", "telemetry", {"smoke_db_m": 0.3})
    site.send("smoke-2", "telemetry", {"smoke_db_m": 0.35})
    fire = stream.wait_for(change("raised", "fire_confirmed"), "fire_confirmed")
    actions = [
        (b["action"], b["alert"]["kind"], b["alert"]["device"]) for b in stream.alert_changes()
    ]
    assert actions == [
        ("raised", "smoke_alarm", "smoke-9"),
        ("raised", "smoke_alarm", "smoke-1"),
        ("raised", "smoke_alarm", "smoke-2"),
        ("raised", "fire_confirmed", fire["alert"]["device"]),
        ("confirmed", "smoke_alarm", "smoke-1"),  # not a nuisance alarm when it clears
        ("confirmed", "smoke_alarm", "smoke-2"),
    ]
    alert = fire["alert"]
    assert (alert["severity"], alert["state"], alert["zone"]) == ("critical", "active", "2F-east")
    assert alert["institution"] == "inst-1"

    board = site.service.alerts(state="open")
    assert sorted((a["kind"], a["device"]) for a in board) == sorted(
        [
            ("fire_confirmed", alert["device"]),
            ("smoke_alarm", "smoke-1"),
            ("smoke_alarm", "smoke-2"),
            ("smoke_alarm", "smoke-9"),
        ]
    )
    assert board[0]["kind"] == "fire_confirmed", "newest first"
    ids = {a["id"] for a in board}

    # A confirmed fire opens an incident-review ticket: its event names the alert, and the
    # alert names the ticket.
    opened = stream.wait_for(ticket_of(alert["id"]), "the ticket", kind="ticket")
    (review,) = site.service.api("GET", "/api/v1/tickets").json()
    assert (review["category"], review["alert_ids"]) == ("incident_review", [alert["id"]])
    assert opened["ticket"]["id"] == review["id"]
    (shown,) = site.service.alerts(kind="fire_confirmed")
    assert shown["ticket_id"] == review["id"]

    # The duty officer acknowledges the fire with a note; the stream says who did.
    response = site.service.api(
        "POST", f"/api/v1/alerts/{alert['id']}/ack", json={"note": "已派人到场"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "acknowledged"
    acked = stream.wait_for(change("acknowledged", "fire_confirmed"), "the acknowledgement")
    assert (acked["actor"], acked["note"]) == ("admin", "已派人到场")
    again = site.service.api("POST", f"/api/v1/alerts/{alert['id']}/ack")
    assert again.status_code == 409, "acknowledged twice"
    detail = site.service.api("GET", f"/api/v1/alerts/{alert['id']}").json()
    assert [(h["action"], h["actor"]) for h in detail["history"]] == [
        ("raised", "system"),
        ("acknowledged", "admin"),
    ]
    assert detail["ticket_id"] == review["id"]

    # smoke-9 skips three messages (seq 2-4 never arrive): counted on the device.
    site.devices.publish(
        TOPIC.format(institution="inst-1", device="smoke-9", channel="telemetry"), {"seq": 5}
    )
    site.devices.wait_all_acked()

    def smoke_9() -> dict[str, Any]:
        body: dict[str, Any] = site.service.api("GET", "/api/v1/devices/smoke-9").json()
        return body

    wait_until(lambda: smoke_9()["last_seq"] == 5, timeout=10, what="smoke-9's seq 5")
    assert smoke_9()["missing"] == 3

    metrics = site.service.api("GET", "/metrics").text
    assert "hazardwatch_seq_missing_total 3.0" in metrics
    assert 'hazardwatch_alerts_raised_total{kind="smoke_alarm",severity="critical"} 3.0' in metrics
    assert 'hazardwatch_alerts_raised_total{kind="fire_confirmed",severity="critical"} 1.0' in (
        metrics
    )
    assert "hazardwatch_alerts_open 4.0" in metrics

    # Other systems: retained MQTT messages, one per open alert, as the API shows it.
    broker_url = site.service.env["HAZARDWATCH_MQTT_URL"]
    wait_until(
        lambda: len(retained_alerts(broker_url, 1.0)) == 4, timeout=15, what="4 retained alerts"
    )
    retained = retained_alerts(broker_url)
    assert {m["id"] for m in retained.values()} == ids
    topic = f"hazardwatch/alerts/inst-1/{alert['id']}"
    assert retained[topic]["state"] == "acknowledged"

    # Dashboards: every change is an `alert` point (repeats only update the board).
    changes = [b for b in stream.alert_changes() if b["action"] != "repeated"]
    assert len(changes) == 7  # 4 raised, 2 confirmed, 1 acknowledged

    def points() -> list[dict[str, Any]]:
        return influxdb.points("alert", influx_db)

    wait_until(lambda: len(points()) == 7, timeout=15, what="7 alert points")
    assert {p["alert_id"] for p in points()} == ids
    states = sorted(p["state"] for p in points() if p["alert_id"] == alert["id"])
    assert states == ["acknowledged", "active"]  # raised, acknowledged
    wait_until(
        lambda: len(influxdb.points("ticket", influx_db)) == 1, timeout=15, what="a ticket point"
    )
    (point,) = influxdb.points("ticket", influx_db)
    assert (point["ticket_id"], point["action"], point["status"]) == (
        review["id"],
        "opened",
        "open",
    )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_gas_leak_ramp_goes_major_critical_major_cleared(
    site_factory: Any, database: str, request: pytest.FixtureRequest
) -> None:
    env = {}
    if database == "postgresql":
        postgres: Postgres = request.getfixturevalue("postgres")
        env["HAZARDWATCH_DATABASE_URL"] = postgres.create_database(f"gas_{uuid.uuid4().hex[:8]}")
    site: Site = site_factory(**env)
    # 47 stays critical: level 2 (50) is left only below 50 - 5 (hysteresis).
    for value in (5, 30, 31, 55, 47, 40, 24, 10):
        site.send("gas-1", "telemetry", {"gas_lel_pct": value})
    site.stream.wait_for(change("cleared", "gas_leak"), "the leak to clear")
    time.sleep(0.5)  # a late extra change would show now
    ramp = [
        (b["action"], b["alert"]["severity"], b["alert"]["value"])
        for b in site.stream.alert_changes()
    ]
    assert ramp == [
        ("raised", "major", 30),
        ("repeated", "major", 31),
        ("severity", "critical", 55),
        ("repeated", "critical", 47),
        ("severity", "major", 40),
        ("repeated", "major", 24),
        ("cleared", "major", 24),  # the last value that showed the leak
    ]
    (alert,) = site.service.alerts(kind="gas_leak")
    assert (alert["state"], alert["severity"], alert["count"]) == ("cleared", "major", 6)
    # A gas leak is a major hazard: a ticket opened at once; cleared, it waits for a person
    # to verify on site.
    (ticket,) = site.service.api("GET", "/api/v1/tickets", params={"category": "gas_leak"}).json()
    assert ticket["major_hazard"] and ticket["alert_ids"] == [alert["id"]]
    assert alert["ticket_id"] == ticket["id"]
    wait_until(
        lambda: (
            site.service.api("GET", f"/api/v1/tickets/{ticket['id']}").json()["status"]
            == "awaiting_verification"
        ),
        timeout=10,
        what="the ticket to await verification",
    )

    # Across a restart the state comes from the database; a redelivery changes nothing.
    site.restart(crash=False)
    assert site.service.alerts(kind="gas_leak") == [alert]
    site.send("gas-1", "telemetry", {"gas_lel_pct": 8})
    response = site.service.api("POST", f"/api/v1/alerts/{alert['id']}/ack", json={})
    assert response.json()["state"] == "resolved", "a cleared alarm, once seen, is done"
    site.stream.wait_for(change("resolved", "gas_leak"), "resolved")
    assert [b["action"] for b in site.stream.alert_changes()] == ["acknowledged", "resolved"]
    # Resolving the alert does not close the ticket: on-site verification does.
    ticket = site.service.api("GET", f"/api/v1/tickets/{ticket['id']}").json()
    assert ticket["status"] == "awaiting_verification"
    (done,) = site.service.alerts(kind="gas_leak")
    assert done["state"] == "resolved" and done["resolved_at"] is not None


def test_a_silent_device_goes_offline_on_time_also_across_a_restart(site_factory: Any) -> None:
    site: Site = site_factory()
    # quiet-1: heartbeat 2 s, so offline 5 s after its last message.
    site.send("quiet-1", "telemetry", {})
    last = time.monotonic()
    offline = site.stream.wait_for(change("raised", "device_offline", "quiet-1"), "offline")
    fired = next(t for t, _, b in site.stream.events if b is offline)
    assert 4.9 <= fired - last <= 6.0, f"fired {fired - last:.2f} s after the last message"
    assert offline["alert"]["severity"] == "major"

    # quiet-2: heartbeat 4 s (10 s). hazardwatch crashes 1 s after its last message; the
    # restarted process measures silence from that message, not from its own start.
    site.send("quiet-2", "telemetry", {})
    last = time.monotonic()
    time.sleep(1.0)
    site.restart(crash=True)
    assert time.monotonic() - last < 9, "the restart took too long for this test"
    offline = site.stream.wait_for(change("raised", "device_offline", "quiet-2"), "offline")
    fired = next(t for t, _, b in site.stream.events if b is offline)
    assert 9.9 <= fired - last <= 11.0, f"fired {fired - last:.2f} s after the last message"
    # quiet-1's alert was stored before the crash: still one, still open, not raised again.
    assert [a["state"] for a in site.service.alerts(device="quiet-1")] == ["active"]
    time.sleep(0.5)
    raised = change("raised", "device_offline", "quiet-1")
    assert not [b for b in site.stream.alert_changes() if raised(b)]

    # A message clears it: the board keeps it as cleared until someone has seen it.
    site.send("quiet-1", "telemetry", {})
    cleared = site.stream.wait_for(change("cleared", "device_offline", "quiet-1"), "clear")
    assert cleared["alert"]["state"] == "cleared"


def test_a_webhook_that_is_down_receives_every_notification_once_back(
    site_factory: Any, receiver: WebhookReceiver
) -> None:
    hooks = [{"name": "duty", "url": receiver.url("/duty"), "min_severity": "minor"}]
    site: Site = site_factory(HAZARDWATCH_ALERTS__WEBHOOKS=json.dumps(hooks))
    # The receiver is down (nothing listens on its port) while alarms come and go.
    site.send("smoke-1", "event", {"type": "alarm", "source": "smoke"})
    for value in (30, 55, 5):
        site.send("gas-1", "telemetry", {"gas_lel_pct": value})
    site.stream.wait_for(change("cleared", "gas_leak"), "the gas alarm to clear")
    smoke = site.stream.wait_for(change("raised", "smoke_alarm"), "smoke")["alert"]
    assert site.service.api("POST", f"/api/v1/alerts/{smoke['id']}/ack").status_code == 200
    site.stream.wait_for(change("acknowledged", "smoke_alarm"), "the acknowledgement")
    wait_until(
        lambda: "consumer webhook:duty failed" in site.service.log_tail(),
        timeout=15,
        what="a failed delivery in the log",
    )
    notified = [
        (b["alert"]["id"], b["action"])
        for b in site.stream.alert_changes()
        if b["action"] != "repeated"  # changes no one is notified of
    ]
    assert len(notified) == 5  # smoke raised, acknowledged; gas raised, severity, cleared

    # hazardwatch restarts meanwhile; each webhook's place in the event log is on disk.
    site.restart(crash=False)
    receiver.start()

    def about(kind: str) -> list[tuple[str, str | None, dict[str, Any]]]:
        return [r for r in receiver.received if kind in r[2]]

    wait_until(lambda: len(about("alert")) >= 5, timeout=60, what="5 alert notifications")
    # The gas leak's ticket reaches the same webhook: opened, then reported rectified by the
    # sensor (it waits for a person's verification).
    wait_until(lambda: len(about("ticket")) >= 2, timeout=30, what="2 ticket notifications")
    time.sleep(1.0)  # a double would come now
    assert [b["action"] for _, _, b in about("ticket")] == ["opened", "rectified"]
    got = [(body["alert"]["id"], body["action"]) for _, _, body in about("alert")]
    assert sorted(got) == sorted(notified)
    for alert_id in {a for a, _ in notified}:  # in order per alert
        assert [x for x in got if x[0] == alert_id] == [x for x in notified if x[0] == alert_id]
    deliveries = [delivery for _, delivery, _ in receiver.received]
    assert len(set(deliveries)) == 7 and None not in deliveries
    first = about("alert")[0][2]
    assert first["institution"]["name"] == "阳光养老院"


def test_an_unacknowledged_critical_alert_escalates_until_acknowledged(
    site_factory: Any, receiver: WebhookReceiver
) -> None:
    receiver.start()
    hooks = [
        {"name": "duty", "url": receiver.url("/duty")},
        {"name": "principal", "url": receiver.url("/principal"), "format": "wecom", "level": 1},
    ]
    site: Site = site_factory(
        HAZARDWATCH_ALERTS__WEBHOOKS=json.dumps(hooks),
        HAZARDWATCH_ALERTS__ESCALATION_INTERVAL_S="1",
    )
    site.send("smoke-1", "event", {"type": "alarm", "source": "smoke"})
    site.stream.wait_for(
        lambda b: b["action"] == "escalated" and b["alert"]["escalation_level"] == 2,
        "two escalations",
    )
    alert = site.stream.wait_for(change("raised", "smoke_alarm"), "smoke")["alert"]
    assert site.service.api("POST", f"/api/v1/alerts/{alert['id']}/ack").status_code == 200
    site.stream.wait_for(change("acknowledged", "smoke_alarm"), "the acknowledgement")
    time.sleep(2.5)  # more than two intervals: no escalation after the acknowledgement
    actions = [b["action"] for b in site.stream.alert_changes()]
    assert actions[-1] == "acknowledged"
    escalations = actions.count("escalated")
    assert escalations >= 2

    wait_until(
        lambda: len([r for r in receiver.received if r[0] == "/duty"]) == len(actions),
        timeout=15,
        what="every change at the duty officer's",
    )
    principal = [body for path, _, body in receiver.received if path == "/principal"]
    # The principal hears from level 1 on: every escalation, then the acknowledgement.
    assert len(principal) == escalations + 1
    for body in principal:
        assert body["msgtype"] == "text"
        assert "阳光养老院" in body["text"]["content"]
        assert body["text"]["mentioned_mobile_list"] == ["13800000001"]


def test_a_board_that_loads_then_follows_misses_nothing_raised_between(
    site_factory: Any,
) -> None:
    # The console loads the open alarms, then opens its stream: what is raised between the two
    # must reach it. The list says up to where it holds (X-Event-Position); the stream begins
    # there (`?last_event_id=`, for a browser's first EventSource, which sends no header).
    site: Site = site_factory()
    answer = site.service.api("GET", "/api/v1/alerts", params={"state": "open"})
    assert answer.json() == []
    position = answer.headers["X-Event-Position"]
    assert position.isdigit()
    site.send("smoke-1", "event", {"type": "alarm", "source": "smoke"})
    site.stream.wait_for(change("raised", "smoke_alarm", "smoke-1"), "the alarm")

    def first_events(query: str) -> str:
        """What a stream opened with `query` sends in its first two seconds."""
        seen = ""
        with (
            httpx.stream(
                "GET",
                f"{site.service.base}/api/v1/stream{query}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=httpx.Timeout(5, read=2),
            ) as stream,
            contextlib.suppress(httpx.ReadTimeout),
        ):
            for text in stream.iter_text():
                seen += text
        return seen

    assert '"smoke_alarm"' in first_events(f"?last_event_id={position}")
    assert '"smoke_alarm"' not in first_events("")

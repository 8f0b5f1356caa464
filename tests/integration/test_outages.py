"""Nothing fails silently and nothing is lost: a hung or stopped PostgreSQL, a crash mid-burst.

`hazardwatch run` against real Mosquitto, InfluxDB and a PostgreSQL of the test's own. Each
test counts: alarms published, alarms on the live stream (within 1 s while the database is
away), webhook deliveries, alert rows in SQL, tickets opened — all equal, none twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import StreamReader
from tests.integration.sites import TOPIC, Site
from tests.integration.webhooks import WebhookReceiver
from tests.servers import Postgres, require_binary

OUTAGE_S = 30.0
GAS = {"gas_lel_pct": 62.0}  # level 2: a critical alarm, a major-hazard ticket at once


@pytest.fixture
def database(tmp_path: Path) -> Any:
    """A PostgreSQL server of this test's own: the test stops it."""
    require_binary("postgres")
    server = Postgres(tmp_path / "own-postgres").start()
    yield server
    server.resume() if server.running else None
    server.cleanup()


def _site(site_factory: Any, database: Postgres, receiver: WebhookReceiver) -> Site:
    receiver.start()
    hooks = f'[{{"name": "duty", "url": "{receiver.url("/duty")}"}}]'
    return site_factory(  # type: ignore[no-any-return]
        HAZARDWATCH_DATABASE_URL=database.create_database("outage"),
        HAZARDWATCH_ALERTS__WEBHOOKS=hooks,
    )


def _raised(site: Site, device: str) -> dict[str, Any] | None:
    for _, event, body in list(site.stream.events):
        if event == "alert" and body["action"] == "raised" and body["alert"]["device"] == device:
            return body
    return None


def _arrival(site: Site, device: str) -> float:
    """When the device's alarm arrived on the stream (monotonic), waiting for it."""
    wait_until(lambda: _raised(site, device) is not None, 5, f"{device} on the stream")
    return next(t for t, _, b in list(site.stream.events) if b is _raised(site, device))


def _deliveries(receiver: WebhookReceiver, action: str, kind: str) -> Counter[str]:
    """Delivery ids of the notifications of this action on an alert or a ticket, counted."""
    return Counter(
        delivery
        for _, delivery, body in list(receiver.received)
        if kind in body and body["action"] == action and delivery is not None
    )


@pytest.mark.parametrize("outage", ["hung", "stopped"])
def test_alarms_reach_the_stream_and_the_webhook_while_the_database_is_away(
    site_factory: Any, database: Postgres, receiver: WebhookReceiver, outage: str
) -> None:
    site = _site(site_factory, database, receiver)
    devices = [f"gas-{n}" for n in range(11, 16)]
    started = time.monotonic()
    database.pause() if outage == "hung" else database.stop()
    try:
        latencies = []
        for device in devices:
            sent = time.monotonic()
            site.send(device, "telemetry", GAS)
            latencies.append(_arrival(site, device) - sent)
        assert max(latencies) < 1.0, f"alarms on the stream within 1 s: {latencies}"
        wait_until(
            lambda: len(_deliveries(receiver, "raised", "alert")) == len(devices),
            timeout=10,
            what="the webhook told of every alarm while the database is away",
        )
        ready = site.service.api("GET", "/readyz").json()
        assert ready["ready"] and ready["status"] == "degraded", ready
        assert not ready["checks"]["database"]
        acked = site.service.api(
            "POST",
            f"/api/v1/alerts/{_raised(site, devices[0])['alert']['id']}/ack",  # type: ignore[index]
        )
        assert acked.status_code == 200, "an acknowledgement needs no SQL"
        refused = site.service.api("GET", "/api/v1/tickets")
        assert refused.status_code == 503 and "database" in refused.json()["detail"]
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
    finally:
        database.resume() if outage == "hung" else database.start()

    wait_until(lambda: len(_tickets(site)) == len(devices), timeout=60, what="every ticket")
    wait_until(
        lambda: len(site.service.alerts(kind="gas_leak")) == len(devices),
        timeout=30,
        what="every alert row (the projection catches up)",
    )
    alerts = site.service.alerts(kind="gas_leak")
    tickets = _tickets(site)
    assert sorted(a["device"] for a in alerts) == devices, "one alert row each, none twice"
    assert sorted(t["device"] for t in tickets) == devices, "one ticket each, none twice"
    assert sorted(a for t in tickets for a in t["alert_ids"]) == sorted(a["id"] for a in alerts)
    assert all(a["ticket_id"] for a in alerts)
    history = site.service.api("GET", f"/api/v1/alerts/{alerts[-1]['id']}").json()["history"]
    assert [h["action"] for h in history][:1] == ["raised"]
    raised = _deliveries(receiver, "raised", "alert")
    assert len(raised) == len(devices) and set(raised.values()) == {1}, "each once"
    delivered = sorted(
        body["alert"]["device"]
        for _, _, body in list(receiver.received)
        if "alert" in body and body["action"] == "raised"
    )
    assert delivered == devices, "one delivery per alarm, under one id each"
    wait_until(
        lambda: len(_deliveries(receiver, "opened", "ticket")) == len(devices),
        timeout=30,
        what="the tickets' notifications",
    )
    alarms = [b for _, e, b in site.stream.events if e == "alert" and b["action"] == "raised"]
    assert len(alarms) == len(devices), "each alarm on the stream once"
    wait_until(
        lambda: site.service.api("GET", "/readyz").json()["status"] == "ok",
        timeout=30,
        what="the service to be ok again",
    )
    ready = site.service.api("GET", "/readyz").json()
    assert ready["ready"] and ready["checks"]["database"], ready


def _tickets(site: Site) -> list[dict[str, Any]]:
    response = site.service.api("GET", "/api/v1/tickets", params={"limit": "1000"})
    if response.status_code != 200:
        return []
    body: list[dict[str, Any]] = response.json()
    return body


def test_a_crash_mid_burst_loses_nothing_and_a_returning_stream_misses_nothing(
    site_factory: Any, database: Postgres, receiver: WebhookReceiver
) -> None:
    site = _site(site_factory, database, receiver)
    watcher = StreamReader(site.service, resume=True)  # a console that reconnects by itself
    devices = [f"smoke-{n}" for n in range(100, 160)]
    fault = {"type": "fault", "code": "sensor_fault"}
    published = threading.Event()

    def burst() -> None:
        for n, device in enumerate(devices):
            topic = TOPIC.format(institution="inst-1", device=device, channel="event")
            site.devices.publish(topic, {"seq": 1, **fault})
            time.sleep(0.05)
            if n == len(devices) // 2:
                published.set()

    sender = threading.Thread(target=burst)
    sender.start()
    assert published.wait(30)
    site.stream.close()
    site.service.kill()  # SIGKILL in the middle of the burst
    sender.join()
    site.devices.wait_all_acked()  # the broker holds the rest for hazardwatch's session
    site.service.start()

    wait_until(lambda: len(_tickets(site)) == len(devices), timeout=60, what="every ticket")
    wait_until(
        lambda: len(_deliveries(receiver, "raised", "alert")) == len(devices),
        timeout=30,
        what="every alarm at the webhook",
    )
    wait_until(
        lambda: (
            len([b for b in watcher.bodies("alert") if b["action"] == "raised"]) == len(devices)
        ),
        timeout=30,
        what="every alarm on the returning stream",
    )
    time.sleep(1.0)  # a repeat would come now
    watcher.close()
    assert watcher.connections >= 2, "the stream was cut by the crash and resumed"
    assert len(watcher.ids) == len(set(watcher.ids)), "no event twice"
    assert watcher.ids == sorted(watcher.ids), "in the log's order"
    raised = [b["alert"]["device"] for b in watcher.bodies("alert") if b["action"] == "raised"]
    assert sorted(raised) == devices, "every alarm once"
    opened = [b["ticket"]["device"] for b in watcher.bodies("ticket") if b["action"] == "opened"]
    assert sorted(opened) == devices, "every ticket's opening once"

    alerts = [a for a in site.service.alerts(kind="device_fault", limit="1000")]
    assert sorted(a["device"] for a in alerts) == devices, "one alert row each"
    tickets = _tickets(site)
    assert sorted(t["device"] for t in tickets) == devices, "one ticket each"
    assert sorted(a for t in tickets for a in t["alert_ids"]) == sorted(a["id"] for a in alerts)
    # At least once to a webhook: a crash between its answer and the checkpoint sends again,
    # with the same delivery id, which a receiver uses to drop the repeat.
    deliveries = [
        (delivery, body["alert"]["id"])
        for _, delivery, body in list(receiver.received)
        if "alert" in body and body["action"] == "raised"
    ]
    by_alert: dict[str, set[str | None]] = {}
    for delivery, alert_id in deliveries:
        by_alert.setdefault(alert_id, set()).add(delivery)
    assert sorted(by_alert) == sorted(a["id"] for a in alerts), "every alarm delivered"
    assert all(len(ids) == 1 for ids in by_alert.values()), "a repeat has the same delivery id"

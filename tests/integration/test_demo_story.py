"""`hazardwatch demo` tells its story: every scenario's alerts and tickets, on a fast clock;
its demo users log in; a taken port is one clear line."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.service_process import ServiceProcess, StreamReader, change
from tests.servers import free_port

# Ten times faster: the round's steps within 30 s; the offline ticket after 1 s (plus the
# ledger's 5 s tick); one round only.
STORY = ["--story-speed", "10", "--story-interval", "3600", "--offline-ticket-after", "1"]
FLEET = ["--institutions", "6", "--devices", "72", "--rate", "20", "--malformed", "0"]


@pytest.fixture
def broker_port() -> int:
    return free_port()


@pytest.fixture
def demo(tmp_path: Path, broker_port: int) -> Iterator[ServiceProcess]:
    service = ServiceProcess(tmp_path, {})
    for name in ("HAZARDWATCH_MQTT_URL", "HAZARDWATCH_INFLUX_URL"):
        service.env.pop(name, None)  # the embedded defaults are what the demo runs on
    broker = ["--embedded-broker-port", str(broker_port)]
    yield service.start("demo", *FLEET, *STORY, *broker)
    service.close()


def _ticket_opened(category: str) -> Any:
    def matches(body: dict[str, Any]) -> bool:
        return bool(body["action"] == "opened" and body["ticket"]["category"] == category)

    return matches


def _logins(log: str) -> dict[str, str]:
    """The demo users and passwords printed in the banner."""
    return dict(re.findall(r"^ {4}(\w+) +([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}) ", log, re.M))


def test_the_story_raises_every_alert_and_opens_the_tickets(
    demo: ServiceProcess, broker_port: int
) -> None:
    stream = StreamReader(demo, last_event_id=0)  # from the first event on
    try:
        fire = stream.wait_for(change("raised", "fire_confirmed"), "fire_confirmed", 30)
        critical = stream.wait_for(
            lambda b: b["alert"]["kind"] == "gas_leak" and b["alert"]["severity"] == "critical",
            "the gas leak to reach critical",
        )
        gas = critical["alert"]["id"]
        raised = stream.wait_for(lambda b: b["alert"]["id"] == gas, "the gas leak raised")
        assert raised["action"] == "raised" and raised["alert"]["severity"] == "major"
        stream.wait_for(
            lambda b: b["alert"]["id"] == gas and b["action"] == "cleared", "the gas to clear"
        )
        offline = stream.wait_for(change("raised", "device_offline"), "device_offline")
        battery = stream.wait_for(change("raised", "low_battery"), "low_battery")
        fault = stream.wait_for(change("raised", "device_fault"), "device_fault")
        assert battery["alert"]["value"] == 12
        assert fault["alert"]["code"] == "sensor_fault"
        smoke = [b["alert"] for b in stream.alert_changes() if b["alert"]["kind"] == "smoke_alarm"]
        confirmed = {a["device"] for a in smoke if a["institution"] == fire["alert"]["institution"]}
        assert len(confirmed) >= 2, smoke  # two detectors of the zone
        # Each in an institution of its own: the story rotates.
        places = [fire, critical, offline, battery, fault]
        assert len({b["alert"]["institution"] for b in places}) == len(places)
        for category in ("incident_review", "gas_leak", "device_offline", "low_battery"):
            stream.wait_for(_ticket_opened(category), f"a {category} ticket", kind="ticket")
        stream.wait_for(_ticket_opened("device_fault"), "a device_fault ticket", kind="ticket")
        ticket = stream.wait_for(_ticket_opened("device_offline"), "-", kind="ticket")
        assert ticket["alert_id"] == offline["alert"]["id"]
        _simulate_plays_a_scenario_against_it(demo, stream, broker_port)
    finally:
        stream.close()
    _the_demo_users_log_in(demo, home=fire["alert"]["institution"])


def _simulate_plays_a_scenario_against_it(
    demo: ServiceProcess, stream: StreamReader, broker_port: int
) -> None:
    """`hazardwatch simulate --scenario` against the running service, with devices of its own."""
    play = ["--scenario", "fault", "--speed", "100", "--broker", f"mqtt://127.0.0.1:{broker_port}"]
    done = subprocess.run(
        [sys.executable, "-m", "hazardwatch", "simulate", *play],
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "simulate: sent" in done.stdout, done.stdout + done.stderr
    assert "设备故障 fault" in done.stdout
    fault = stream.wait_for(
        lambda b: b["alert"]["device"].endswith("-sim") and b["action"] == "raised", "its fault"
    )
    assert fault["alert"]["kind"] == "device_fault"
    stream.wait_for(
        lambda b: b["alert"]["id"] == fault["alert"]["id"] and b["action"] == "cleared",
        "its fault to clear",
    )


def _the_demo_users_log_in(demo: ServiceProcess, home: str) -> None:
    logins = _logins(demo.log_path.read_text())
    assert set(logins) == {"duty", "home", "town", "bureau", "contractor"}, demo.log_tail()
    with httpx.Client(base_url=demo.base, timeout=15) as browser:
        answer = browser.post(
            "/api/v1/session", json={"username": "duty", "password": logins["duty"]}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["user"]["role"] == "duty_officer"
    with httpx.Client(base_url=demo.base, timeout=15) as browser:
        answer = browser.post(
            "/api/v1/session", json={"username": "home", "password": logins["home"]}
        )
        assert answer.status_code == 200, answer.text
        seen = browser.get("/api/v1/alerts").json()
        # The institution user sees the first fire, in their own home, and nothing else.
        assert seen and {a["institution"] for a in seen} == {home}
    assert f"http://127.0.0.1:{demo.port}/" in demo.log_tail(100_000)


def _demo_exits(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**ServiceProcess(tmp_path, {}).env}
    env.pop("HAZARDWATCH_MQTT_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "hazardwatch", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("which", ["--port", "--embedded-broker-port"])
def test_a_taken_port_is_one_clear_line(tmp_path: Path, which: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        ports = {"--port": str(free_port()), "--embedded-broker-port": str(free_port())}
        ports[which] = str(taken)
        done = _demo_exits(tmp_path, *[x for pair in ports.items() for x in pair])
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"hazardwatch: port {taken} on 127.0.0.1 ("), done.stderr
    assert which in last and "Traceback" not in done.stderr

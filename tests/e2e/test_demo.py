"""`hazardwatch demo`, whole: embedded broker and store, a simulated fleet, the HTTP API."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.mqtt_tools import wait_until
from tests.servers import free_port

TOKEN = "e2e-" + "t" * 40


class Demo:
    """The demo as a child process, as a newcomer starts it."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.log = tmp_path / "demo.log"
        self.api = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "HAZARDWATCH_DATA_DIR": str(self.data),
            "HAZARDWATCH_API_PORT": self.api.rsplit(":", 1)[1],
            "HAZARDWATCH_ADMIN_TOKEN": TOKEN,
        }
        for name in ("HAZARDWATCH_MQTT_URL", "HAZARDWATCH_INFLUX_URL"):
            self.env.pop(name, None)  # the embedded defaults are what is under test
        self.args = ["--devices", "20", "--institutions", "4", "--rate", "40"]
        self.args += ["--malformed", "0.1", "--embedded-broker-port", str(free_port())]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hazardwatch", "demo", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.api + path, headers=headers, timeout=5)

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.get("/readyz", token=None).status_code == 200
        except httpx.HTTPError:
            return False

    def device_ids(self, tmp_path: Path) -> list[str]:
        """The simulated fleet's devices, as the demo's own export names them."""
        path = tmp_path / "fleet.yaml"
        subprocess.run(
            [sys.executable, "-m", "hazardwatch", "demo", *self.args, "--export-registry", path],
            env=self.env,
            check=True,
            capture_output=True,
        )
        return [d["id"] for d in yaml.safe_load(path.read_text())["devices"]]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    demo = Demo(tmp_path)
    yield demo
    if demo.process.poll() is None:
        demo.process.kill()
        demo.process.wait()


def test_demo_stores_readings_serves_the_api_and_stops_cleanly(demo: Demo, tmp_path: Path) -> None:
    wait_until(demo.ready, timeout=60, what="the demo to be ready")
    devices = demo.device_ids(tmp_path)
    assert len(devices) == 20

    assert demo.get("/healthz", token=None).status_code == 200
    for path in ("/api/v1/dead-letters", f"/api/v1/devices/{devices[0]}"):
        assert demo.get(path, token=None).status_code == 401
        assert demo.get(path, token="wrong").status_code == 401

    def heard_from_all() -> bool:
        return all(demo.get(f"/api/v1/devices/{d}").json().get("last_seen") for d in devices)

    wait_until(heard_from_all, timeout=60, what="every simulated device to be seen")
    device = demo.get(f"/api/v1/devices/{devices[0]}").json()
    assert device["id"] == devices[0] and device["online"] is True
    assert demo.get("/api/v1/devices/nobody").status_code == 404

    wait_until(lambda: demo.get("/api/v1/dead-letters").json()["items"], what="a dead letter")
    page = demo.get("/api/v1/dead-letters").json()
    assert all(item["reason"] and item["detail"] for item in page["items"])
    assert sum(page["counts"].values()) >= len(page["items"])

    assert demo.get("/metrics", token=None).status_code == 401
    metrics = demo.get("/metrics").text
    received = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("hazardwatch_messages_received_total{")
    ]
    assert sum(received) > 0, metrics[:2000]

    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(30) == 0, demo.log.read_text()[-3000:]
    log = demo.log.read_text()
    records = [line for line in log.splitlines() if " INFO " in line or " WARNING " in line]
    assert records, log[-2000:]
    assert not [line for line in records if TOKEN in line], "a secret in the log"
    with sqlite3.connect(demo.data / "timeseries.sqlite") as db:
        readings = db.execute("SELECT count(*) FROM points WHERE measurement = 'reading'")
        stored = readings.fetchone()[0]
    assert stored > 0
    assert "0 records left in the spool" in log, log[-2000:]

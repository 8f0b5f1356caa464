"""A real crash: `hazardwatch run` is killed with SIGKILL mid-stream and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.mqtt_tools import Publisher, wait_until
from tests.servers import InfluxDB1, Mosquitto, free_port


class Service:
    """`hazardwatch run` as a child process, with its log in a file."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, influxdb: InfluxDB1, db: str) -> None:
        self.log_path = tmp_path / "service.log"
        self.port = free_port()
        env = {
            **os.environ,
            "HAZARDWATCH_MQTT_URL": broker.url,
            "HAZARDWATCH_INFLUX_URL": influxdb.url,
            "HAZARDWATCH_INFLUX_API": "v1",
            "HAZARDWATCH_INFLUX_DB": db,
            "HAZARDWATCH_DATA_DIR": str(tmp_path / "data"),
            "HAZARDWATCH_API_PORT": str(self.port),
            "HAZARDWATCH_ADMIN_TOKEN": "x" * 32,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hazardwatch", "run"], env=env, stdout=log, stderr=log
            )

    def ready(self) -> bool:
        """True once /readyz says broker, store and database are reachable."""
        assert self.process.poll() is None, self.log_path.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        """SIGTERM, as an init system would; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, mosquitto_factory: object, influxdb: InfluxDB1, influx_db: str
) -> None:
    broker: Mosquitto = mosquitto_factory()  # type: ignore[operator]
    service = Service(tmp_path, broker, influxdb, influx_db)
    try:
        wait_until(service.ready, what="the service to be ready")
        publisher = Publisher(broker.url)
        total = 6000
        # No `ts`: the receive time is the point's time, so a message stored twice would be
        # two points. Only recognising the redelivery keeps the count exact.
        for i in range(total):
            publisher.publish(
                f"hazardwatch/v1/inst-1/dev-{i % 20}/telemetry",
                {"seq": i, "kind": "smoke", "smoke_db_m": 0.01},
            )
            if i == total // 2:
                time.sleep(0.05)
                service.process.send_signal(signal.SIGKILL)
                service.process.wait(10)
        publisher.wait_all_acked()
        publisher.close()
        service = Service(tmp_path, broker, influxdb, influx_db)
        wait_until(
            lambda: influxdb.count("reading", influx_db) >= total, timeout=60, what="all points"
        )
        time.sleep(1.0)  # a late double would show up now
        rows = influxdb.points("reading", influx_db)
        seqs = sorted(r["seq"] for r in rows)
        assert len(rows) == total, f"{len(rows) - len(set(seqs))} doubles"
        assert seqs == list(range(total))
    finally:
        code = service.stop()
    assert code == 0, service.log_path.read_text()[-3000:]
    assert "recovered" in service.log_path.read_text(), "the restart must read the spool"

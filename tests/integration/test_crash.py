"""A real crash: `hazardwatch run` is killed with SIGKILL mid-stream and started again."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.mqtt_tools import Publisher, wait_until
from tests.integration.service_process import ServiceProcess
from tests.servers import InfluxDB1, Mosquitto


def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, mosquitto_factory: object, influxdb: InfluxDB1, influx_db: str
) -> None:
    broker: Mosquitto = mosquitto_factory()  # type: ignore[operator]
    service = ServiceProcess(
        tmp_path,
        {
            "HAZARDWATCH_MQTT_URL": broker.url,
            "HAZARDWATCH_INFLUX_URL": influxdb.url,
            "HAZARDWATCH_INFLUX_API": "v1",
            "HAZARDWATCH_INFLUX_DB": influx_db,
        },
    )
    try:
        service.start()
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
                service.kill()
        publisher.wait_all_acked()
        publisher.close()
        service.start()
        wait_until(
            lambda: influxdb.count("reading", influx_db) >= total, timeout=60, what="all points"
        )
        time.sleep(1.0)  # a late double would show up now
        rows = influxdb.points("reading", influx_db)
        seqs = sorted(r["seq"] for r in rows)
        assert len(rows) == total, f"{len(rows) - len(set(seqs))} doubles"
        assert seqs == list(range(total))
        code = service.stop()
    finally:
        service.close()
    assert code == 0, service.log_tail()
    assert "recovered" in service.log_path.read_text(), "the restart must read the spool"

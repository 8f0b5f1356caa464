"""Ingestion through real Mosquitto into real InfluxDB 1.x: counted, exactly once."""

from __future__ import annotations

import time

from tests.integration.conftest import StageFactory
from tests.integration.mqtt_tools import Publisher, wait_until
from tests.servers import InfluxDB1, Mosquitto

# A day ago: device times older than the parser's age limit (30 days) are dead letters.
BASE_MS = (int(time.time()) - 86_400) * 1000


def _telemetry(i: int, with_ts: bool = True) -> dict[str, object]:
    body: dict[str, object] = {"seq": i, "kind": "smoke", "smoke_db_m": round(0.001 * (i % 50), 3)}
    if with_ts:
        body["ts"] = BASE_MS + i
    return body


def test_every_valid_message_is_stored_once_and_bad_ones_are_dead_lettered(
    stage_factory: StageFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    stage = stage_factory(mosquitto)
    publisher = Publisher(mosquitto.url)
    p = mqtt_topic_prefix
    n = 1500
    for i in range(n):
        publisher.publish(f"{p}/inst-1/dev-{i % 15}/telemetry", _telemetry(i))
    for i in range(40):
        publisher.publish(
            f"{p}/inst-1/dev-{i % 4}/event", {"ts": BASE_MS + i, "type": "test", "seq": 10_000 + i}
        )
    publisher.publish(f"{p}/inst-1/dev-1/status", "offline")
    bad = {
        "bad_json": b"{not json",
        "invalid_field": b'{"gas_lel_pct": 150}',
        "not_an_object": b"[1, 2]",
        "bad_encoding": b"\xff\xfe\xfd",
        "oversized_payload": b'{"x": "' + b"a" * 17_000 + b'"}',
        "future_timestamp": b'{"ts": "2099-01-01T00:00:00Z"}',
    }
    for payload in bad.values():
        publisher.publish(f"{p}/inst-1/dev-bad/telemetry", payload)
    publisher.publish(f"{p}/inst-1/dev-bad/nonsense", b"{}")
    publisher.wait_all_acked()
    expected = n + 40 + 1 + len(bad) + 1
    try:
        wait_until(lambda: stage.pending == 0 and stage.spool.committed_lsn == expected)
    finally:
        print(
            "committed",
            stage.spool.committed_lsn,
            "pending",
            stage.pending,
            "received",
            stage.metrics.total("hazardwatch_messages_received_total"),
            "dup",
            stage.metrics.total("hazardwatch_messages_duplicate_total"),
        )

    assert influxdb.count("reading", influx_db) == n
    assert influxdb.count("device_event", influx_db) == 40
    assert influxdb.count("device_status", influx_db) == 1
    counts = stage.dead_letters.counts()
    assert counts == {**{reason: 1 for reason in bad}, "unknown_topic": 1}
    rows = influxdb.points("reading", influx_db)
    assert {r["device"] for r in rows} == {f"dev-{i}" for i in range(15)}
    assert sorted(r["seq"] for r in rows) == list(range(n))
    publisher.close()


def test_unknown_devices_are_dead_lettered_when_auto_registration_is_off(
    stage_factory: StageFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    stage = stage_factory(mosquitto, auto_register=False)
    publisher = Publisher(mosquitto.url)
    for i in range(10):
        publisher.publish(f"{mqtt_topic_prefix}/inst-1/stranger/telemetry", _telemetry(i))
    publisher.wait_all_acked()
    wait_until(lambda: stage.spool.committed_lsn == 10 and stage.pending == 0)
    assert stage.dead_letters.counts() == {"unknown_device": 10}
    assert influxdb.count("reading", influx_db) == 0
    publisher.close()

"""Ingestion through real Mosquitto into real InfluxDB 1.x: counted, exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import make_engine, session_factory, upgrade
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from core.settings import parse_mqtt_url
from ingest.sinks.influx_v1 import InfluxV1Sink
from ingest.stage import IngestStage
from tests.integration.mqtt_tools import Publisher, wait_until
from tests.servers import InfluxDB1, Mosquitto

BASE_MS = 1_763_798_400_000


def _directory(tmp_path: Path, auto_register: bool = True) -> DeviceDirectory:
    url = f"sqlite:///{tmp_path / 'hw.sqlite'}"
    upgrade(url)
    directory = DeviceDirectory(
        RegistryRepository(session_factory(make_engine(url))), auto_register=auto_register
    )
    directory.load()
    return directory


@pytest.fixture
def stage_factory(
    tmp_path: Path, influxdb: InfluxDB1, influx_db: str, mqtt_topic_prefix: str
) -> Iterator[object]:
    stages: list[IngestStage] = []

    def make(broker: Mosquitto, *, auto_register: bool = True, data: str = "data") -> IngestStage:
        stage = IngestStage(
            data_dir=tmp_path / data,
            sink=InfluxV1Sink(influxdb.url, influx_db),
            directory=_directory(tmp_path, auto_register),
            endpoint=parse_mqtt_url(broker.url),
            client_id=f"hw-{uuid.uuid4().hex[:8]}",
            prefix=mqtt_topic_prefix,
        )
        stage.start()
        assert stage.source.wait_connected(10), "ingest did not connect to Mosquitto"
        stages.append(stage)
        return stage

    yield make
    for stage in stages:
        if stage.source.connected.is_set() or stage.committer._thread is not None:
            stage.stop()


def _telemetry(i: int, with_ts: bool = True) -> dict[str, object]:
    body: dict[str, object] = {"seq": i, "kind": "smoke", "smoke_db_m": round(0.001 * (i % 50), 3)}
    if with_ts:
        body["ts"] = BASE_MS + i
    return body


def test_every_valid_message_is_stored_once_and_bad_ones_are_dead_lettered(
    stage_factory: object,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    stage = stage_factory(mosquitto)  # type: ignore[operator]
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


def test_influxdb_outage_is_bridged_by_the_spool(
    stage_factory: object,
    mosquitto: Mosquitto,
    tmp_path: Path,
    mqtt_topic_prefix: str,
) -> None:
    """InfluxDB goes away for a while: ingestion goes on, and everything arrives once, in order."""
    influx = InfluxDB1(tmp_path / "own-influx").start()
    try:
        influx.create_database("outage")
        stage = IngestStage(
            data_dir=tmp_path / "data-outage",
            sink=InfluxV1Sink(influx.url, "outage"),
            directory=_directory(tmp_path),
            endpoint=parse_mqtt_url(mosquitto.url),
            client_id=f"hw-{uuid.uuid4().hex[:8]}",
            prefix=mqtt_topic_prefix,
        )
        stage.start()
        assert stage.source.wait_connected(10)
        publisher = Publisher(mosquitto.url)
        topic = f"{mqtt_topic_prefix}/inst-1/dev-%d/telemetry"
        for i in range(500):
            publisher.publish(topic % (i % 5), _telemetry(i, with_ts=False))
        publisher.wait_all_acked()
        wait_until(lambda: stage.pending == 0 and stage.spool.committed_lsn == 500)

        influx.stop()
        for i in range(500, 3500):
            publisher.publish(topic % (i % 5), _telemetry(i, with_ts=False))
        publisher.wait_all_acked()
        # Ingestion went on: every message is durable (hence acknowledged) while the store is down.
        wait_until(lambda: stage.spool.committed_lsn == 3500, what="spooling during the outage")
        assert stage.pending >= 3000
        wait_until(lambda: not stage.forwarder.store_healthy, what="the outage to be noticed")

        influx.start()
        wait_until(lambda: stage.pending == 0, timeout=60, what="the spool to drain")
        stage.stop()
        rows = influx.points("reading", "outage")
        assert len(rows) == 3500
        assert sorted(r["seq"] for r in rows) == list(range(3500)), "nothing lost or doubled"
        for device in range(5):
            seqs = [
                r["seq"]
                for r in sorted(rows, key=lambda r: r["time"])
                if r["device"] == f"dev-{device}"
            ]
            assert seqs == sorted(seqs), "per-device order kept"
        publisher.close()
    finally:
        influx.stop()


def test_broker_restart_loses_nothing(
    stage_factory: object,
    mosquitto_factory: object,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    """Mosquitto restarts mid-stream: ingest reconnects to its persistent session."""
    broker: Mosquitto = mosquitto_factory()  # type: ignore[operator]
    stage = stage_factory(broker)  # type: ignore[operator]
    topic = f"{mqtt_topic_prefix}/inst-1/dev-%d/telemetry"
    publisher = Publisher(broker.url)
    for i in range(1000):
        publisher.publish(topic % (i % 10), _telemetry(i))
    publisher.wait_all_acked()
    publisher.close()
    broker.restart()
    publisher = Publisher(broker.url)
    for i in range(1000, 2000):
        publisher.publish(topic % (i % 10), _telemetry(i))
    publisher.wait_all_acked()
    wait_until(lambda: influxdb.count("reading", influx_db) == 2000, what="2000 points")
    wait_until(lambda: stage.pending == 0)
    assert sorted(r["seq"] for r in influxdb.points("reading", influx_db)) == list(range(2000))
    publisher.close()


def test_unknown_devices_are_dead_lettered_when_auto_registration_is_off(
    stage_factory: object,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    stage = stage_factory(mosquitto, auto_register=False)  # type: ignore[operator]
    publisher = Publisher(mosquitto.url)
    for i in range(10):
        publisher.publish(f"{mqtt_topic_prefix}/inst-1/stranger/telemetry", _telemetry(i))
    publisher.wait_all_acked()
    wait_until(lambda: stage.spool.committed_lsn == 10 and stage.pending == 0)
    assert stage.dead_letters.counts() == {"unknown_device": 10}
    assert influxdb.count("reading", influx_db) == 0
    publisher.close()

"""The counted fault cases of ingestion: volume, store outage, broker restart, bad input.

Each test counts exactly: so many sent, so many stored, none twice.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from core.registry.models import Device, Institution, RegistryFile
from ingest.parser import Reason
from ingest.stage import IngestStage
from tests.integration.conftest import StageFactory, stage_health
from tests.integration.mqtt_tools import Publisher, Stream, wait_until
from tests.servers import InfluxDB1, Mosquitto, MosquittoFactory

# A day ago: device times older than the parser's age limit (30 days) are dead letters.
BASE_MS = (int(time.time()) - 86_400) * 1000


def _reading(prefix: str, devices: int, with_ts: bool = True) -> Any:
    """Message `i` of a stream: device `i % devices`, `seq` i, a smoke reading."""

    def message(i: int) -> tuple[str, dict[str, object]]:
        body: dict[str, object] = {"seq": i, "kind": "smoke", "smoke_db_m": 0.001 * (i % 50)}
        if with_ts:
            body["ts"] = BASE_MS + i
        return f"{prefix}/inst-1/dev-{i % devices}/telemetry", body

    return message


def _assert_exactly_once(rows: list[dict[str, Any]], total: int) -> None:
    seqs = sorted(r["seq"] for r in rows)
    assert len(rows) == total, f"{len(rows)} points for {total} messages"
    assert seqs == list(range(total)), "every message once, none twice"


def _finish_and_check(
    stream: Stream, stage: IngestStage, influxdb: InfluxDB1, db: str, total: int
) -> None:
    """Send the rest of the stream, wait until all is stored, and count exactly."""
    stream.finish()
    wait_until(lambda: influxdb.count("reading", db) >= total, timeout=60, what=f"{total}")
    wait_until(lambda: stage.pending == 0)
    _assert_exactly_once(influxdb.points("reading", db), total)


def test_100000_messages_become_100000_points(
    stage_factory: StageFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    total = 100_000
    stage = stage_factory(mosquitto)
    message = _reading(mqtt_topic_prefix, devices=100)
    publisher = Publisher(mosquitto.url)
    for i in range(total):
        publisher.publish(*message(i))
    publisher.wait_all_acked(timeout=120)
    publisher.close()
    wait_until(
        lambda: stage.spool.committed_lsn == total and stage.pending == 0,
        timeout=120,
        what=f"{total} messages stored",
    )
    _assert_exactly_once(influxdb.points("reading", influx_db), total)
    assert stage.metrics.total("hazardwatch_points_stored_total") == total
    assert stage.dead_letters.counts() == {}


def test_influxdb_down_for_30_s_mid_stream_loses_nothing(
    stage_factory: StageFactory, mosquitto: Mosquitto, tmp_path: Path, mqtt_topic_prefix: str
) -> None:
    """Ingestion goes on while the store is away; everything arrives once, in order."""
    influx = InfluxDB1(tmp_path / "own-influx").start()
    try:
        influx.create_database("outage")
        stage = stage_factory(mosquitto, influx=(influx, "outage"))
        # No `ts`: points take the receive time, so replaying a batch twice would double it.
        stream = Stream(mosquitto.url, _reading(mqtt_topic_prefix, 5, with_ts=False), 9000, 200)
        stream.start().wait_sent(1000)
        influx.stop()
        down_at = stage.spool.committed_lsn
        time.sleep(30)
        assert not stage.forwarder.store_healthy, "the outage went unnoticed"
        assert stage.spool.committed_lsn > down_at + 5000, "ingestion stalled with the store"
        assert stage.pending > 5000
        influx.start()
        stream.finish()
        wait_until(lambda: stage.pending == 0 and stage.spool.committed_lsn == 9000, timeout=60)
        rows = influx.points("reading", "outage")
        _assert_exactly_once(rows, 9000)
        for device in range(5):
            mine = sorted(
                (r for r in rows if r["device"] == f"dev-{device}"), key=lambda r: r["time"]
            )
            assert [r["seq"] for r in mine] == sorted(r["seq"] for r in mine), "order kept"
    finally:
        influx.stop()


def test_broker_restart_mid_stream_loses_nothing(
    stage_factory: StageFactory,
    mosquitto_factory: MosquittoFactory,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    """Mosquitto (persistence on) restarts while messages flow: the session carries them."""
    broker = mosquitto_factory()
    stage = stage_factory(broker)
    stream = Stream(broker.url, _reading(mqtt_topic_prefix, 10), 6000, 400)
    stream.start().wait_sent(2000)
    broker.stop()
    time.sleep(2)
    assert not stage.source.connected.is_set()
    broker.start()
    assert stage.source.wait_connected(40), "ingest did not reconnect"
    _finish_and_check(stream, stage, influxdb, influx_db, 6000)


def test_edge_process_killed_mid_stream_loses_nothing(
    stage_factory: StageFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    """The receive edge dies (SIGKILL): it is started again and the session carries on."""
    stage = stage_factory(mosquitto)
    stream = Stream(mosquitto.url, _reading(mqtt_topic_prefix, 10), 6000, 400)
    stream.start().wait_sent(2000)
    pid = stage.source.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: stage.source.pid not in (None, pid), timeout=20, what="a new edge")
    assert stage.source.restarts == 1
    assert stage.source.wait_connected(30), "the new edge did not connect"
    _finish_and_check(stream, stage, influxdb, influx_db, 6000)


# The bad inputs of issue 2, each a (topic suffix, payload, reason) for device `dev-N`.
_BAD: list[tuple[str, bytes, str]] = [
    ("inst-1/dev-{n}/telemetry", b'{"seq": 1, "smoke_db_m": 0.1', Reason.BAD_JSON),
    ("inst-1/dev-{n}/telemetry", b'{"smoke_db_m": "high"}', Reason.INVALID_FIELD),
    ("inst-1/dev-{n}/telemetry", b'{"gas_lel_pct": 140}', Reason.INVALID_FIELD),
    ("inst-1/dev-{n}/readings", b'{"smoke_db_m": 0.1}', Reason.UNKNOWN_TOPIC),
    ("inst-1/dev-{n}/telemetry", b'{"detail": "' + b"x" * 17_000 + b'"}', Reason.OVERSIZED),
    ("inst-1/dev-{n}/telemetry", b'{"ts": "2099-01-01T00:00:00Z"}', Reason.FUTURE_TIMESTAMP),
    ("inst-1/stranger-{n}/telemetry", b'{"smoke_db_m": 0.1}', Reason.UNKNOWN_DEVICE),
    ("inst-1/dev-{n}/event", b"", Reason.EMPTY),
    ("inst-1/dev-{n}/event", b"\xff\xfe{}", Reason.BAD_ENCODING),
    ("inst-1/dev-{n}/telemetry", b"[0.1, 22.5]", Reason.NOT_AN_OBJECT),
]


def test_1000_malformed_messages_become_1000_dead_letters_while_good_ones_flow(
    stage_factory: StageFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    devices = [Device(id=f"dev-{n}", institution="inst-1", kind="smoke") for n in range(10)]
    registry = RegistryFile(institutions=[Institution(id="inst-1", name="敬老院")], devices=devices)
    stage = stage_factory(mosquitto, auto_register=False, registry=registry)
    publisher = Publisher(mosquitto.url)
    good = _reading(mqtt_topic_prefix, devices=10)
    expected: dict[str, int] = {}
    for i in range(1000):
        suffix, payload, reason = _BAD[i % len(_BAD)]
        publisher.publish(f"{mqtt_topic_prefix}/{suffix.format(n=i % 10)}", payload)
        expected[reason] = expected.get(reason, 0) + 1
        publisher.publish(*good(2 * i))
        publisher.publish(*good(2 * i + 1))
    publisher.wait_all_acked()
    publisher.close()
    wait_until(lambda: stage.spool.committed_lsn == 3000 and stage.pending == 0, timeout=60)

    assert len(expected) >= 8
    assert stage.dead_letters.counts() == expected
    assert sum(stage.dead_letters.counts().values()) == 1000
    _assert_exactly_once(influxdb.points("reading", influx_db), 2000)
    details = {letter.detail for _, letter in stage.dead_letters.list(reason=Reason.INVALID_FIELD)}
    assert any("smoke_db_m" in d for d in details), details
    assert any("gas_lel_pct" in d for d in details), details
    for _, letter in stage.dead_letters.list(reason=Reason.OVERSIZED, limit=1):
        assert letter.size > 16_384 and len(letter.payload) == 16_384, "payload cut at 16 KiB"
    assert stage.metrics.total("hazardwatch_messages_dead_lettered_total") == 1000


def test_a_5_mib_payload_is_a_dead_letter_with_its_size_and_never_reaches_the_disk(
    stage_factory: StageFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_db: str,
    mqtt_topic_prefix: str,
) -> None:
    stage = stage_factory(mosquitto)
    publisher = Publisher(mosquitto.url)
    good = _reading(mqtt_topic_prefix, devices=2)
    huge = b'{"seq": 1, "detail": "' + b"x" * (5 << 20) + b'"}'
    publisher.publish(*good(0))
    publisher.publish(f"{mqtt_topic_prefix}/inst-1/dev-9/event", huge)
    publisher.publish(*good(1))
    publisher.wait_all_acked()
    publisher.close()
    wait_until(lambda: stage.spool.committed_lsn == 3 and stage.pending == 0, timeout=30)
    ((_, letter),) = stage.dead_letters.list()
    assert (letter.reason, letter.size, len(letter.payload)) == (
        Reason.OVERSIZED,
        len(huge),
        16_384,
    )
    assert str(len(huge)) in letter.detail, "the size it arrived with, not what was kept"
    assert stage.source.size_bytes() < 1 << 20, "only the start of the payload was spooled"
    _assert_exactly_once(influxdb.points("reading", influx_db), 2)


def test_full_spools_stop_the_acknowledgements_and_lose_nothing(
    stage_factory: StageFactory,
    mosquitto_factory: MosquittoFactory,
    tmp_path: Path,
    mqtt_topic_prefix: str,
) -> None:
    """InfluxDB away long enough to fill the spools: nothing more is acknowledged (the broker
    holds it), the service says why, and when the store is back everything arrives once."""
    influx = InfluxDB1(tmp_path / "own-influx").start()
    try:
        influx.create_database("full")
        cap = 2 << 20
        broker = mosquitto_factory()
        stage = stage_factory(broker, influx=(influx, "full"), spool_max_bytes=cap)
        influx.stop()
        total = 30_000
        publisher = Publisher(broker.url)
        message = _reading(mqtt_topic_prefix, devices=50)
        for i in range(total):
            publisher.publish(*message(i))

        def refused() -> bool:  # both spools full: the edge takes nothing more
            ready, _, reports = stage_health[id(stage)].report()
            edge, digester = reports["edge"], reports["digester"]
            return (
                not ready
                and edge["state"] == "failed"
                and "full" in edge["reason"]
                and "points spool cannot be written" in digester["reason"]
                # not just reported: no raw segment freed since (a full journal takes
                # nothing until an eighth of its cap is free again)
                and stage.source.size_bytes() > cap - cap // 8
            )

        wait_until(refused, timeout=60, what="the full spools to be reported")
        taken = stage.source.committed_lsn
        time.sleep(2.0)
        assert stage.source.committed_lsn == taken, "nothing more is taken while full"
        assert taken < total
        influx.start()
        publisher.wait_all_acked(timeout=120)
        publisher.close()
        wait_until(lambda: influx.count("reading", "full") >= total, timeout=180, what="all")
        wait_until(lambda: stage.pending == 0, timeout=30)
        _assert_exactly_once(influx.points("reading", "full"), total)
        assert stage_health[id(stage)].report()[0], "ready again"
    finally:
        influx.stop()

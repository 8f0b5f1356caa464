"""A device's readings read back from a real InfluxDB 1.x (InfluxQL GROUP BY time): the means
per bucket exactly, as written by the service's own sink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.errors import StoreError
from core.points import Point
from core.readings import READING_FIELDS, ReadingsQuery, epoch_ms, readings_query
from ingest.sinks.embedded import EmbeddedReadings, EmbeddedSink
from ingest.sinks.influx_v1 import InfluxV1Readings, InfluxV1Sink
from tests.servers import InfluxDB1, free_port

START = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
# Sums of these halves and quarters are exact in binary: the means can be compared with ==.
GAS = [1.0, 2.5, 4.0, 7.25, 0.5, 3.0, 9.0, 6.75]


def _points() -> list[Point]:
    """gas-1: one reading a minute from START; CO only in the first minute; gas-2 beside it."""
    tags = {"institution": "inst-1", "device": "gas-1", "kind": "multi"}
    points = [
        Point("reading", tags, {"gas_lel_pct": v, "battery_pct": 90.0 - i}, epoch_ms(at))
        for i, v in enumerate(GAS)
        for at in [START + timedelta(minutes=i)]
    ]
    points.append(
        Point("reading", tags, {"co_ppm": 12.0, "alarm": True, "seq": 7}, epoch_ms(START) + 1)
    )
    other = {"institution": "inst-1", "device": "gas-2", "kind": "gas"}
    points.append(Point("reading", other, {"gas_lel_pct": 99.0}, epoch_ms(START)))
    return points


def _expected(values: list[float], every_min: int) -> list[tuple[datetime, float]]:
    buckets = [values[i : i + every_min] for i in range(0, len(values), every_min)]
    return [
        (START + timedelta(minutes=every_min * n), sum(b) / len(b)) for n, b in enumerate(buckets)
    ]


def test_influxdb_gives_the_mean_of_each_field_per_bucket_exactly(
    influxdb: InfluxDB1, influx_db: str
) -> None:
    sink = InfluxV1Sink(influxdb.url, influx_db)
    sink.write(_points())
    sink.write(_points())  # redelivered: the same points, not counted twice
    sink.close()
    reader = InfluxV1Readings(influxdb.url, influx_db)
    try:
        query = ReadingsQuery("gas-1", START, START + timedelta(minutes=10), 180, READING_FIELDS)
        series = reader.readings(query)
    finally:
        reader.close()
    assert series["gas_lel_pct"] == _expected(GAS, 3)
    assert series["battery_pct"] == _expected([90.0 - i for i in range(len(GAS))], 3)
    assert series["co_ppm"] == [(START, 12.0)]
    assert series["smoke_db_m"] == [] and series["temperature_c"] == []


def test_influxdb_and_the_embedded_store_answer_the_same(
    influxdb: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    points = _points()
    sink = InfluxV1Sink(influxdb.url, influx_db)
    sink.write(points)
    sink.close()
    embedded = EmbeddedSink(tmp_path / "timeseries.sqlite")
    embedded.write(points)
    embedded.close()
    # From 08:00:30 (inside a bucket) to 08:07, in buckets of 2 minutes, two fields.
    query = readings_query(
        "gas-1",
        start=START + timedelta(seconds=30),
        stop=START + timedelta(minutes=7),
        every_s=120,
        fields=["gas_lel_pct,co_ppm"],
        now=START + timedelta(days=1),
    )
    influx = InfluxV1Readings(influxdb.url, influx_db)
    try:
        from_influx = influx.readings(query)
    finally:
        influx.close()
    from_sqlite = EmbeddedReadings(embedded.path).readings(query)
    assert from_influx == from_sqlite
    minute = timedelta(minutes=1)
    assert from_influx["gas_lel_pct"] == [
        (START, GAS[1]),  # 08:01 alone: 08:00 is before `from`, 08:02 the next bucket
        (START + 2 * minute, (GAS[2] + GAS[3]) / 2),
        (START + 4 * minute, (GAS[4] + GAS[5]) / 2),
        (START + 6 * minute, GAS[6]),
    ]
    assert from_influx["co_ppm"] == []  # 08:00:00.001 is before `from`


def test_a_database_not_written_yet_has_no_readings_and_a_server_away_is_a_store_error(
    influxdb: InfluxDB1,
) -> None:
    reader = InfluxV1Readings(influxdb.url, "never_written")
    query = ReadingsQuery("gas-1", START, START + timedelta(hours=1), 60, ("gas_lel_pct",))
    try:
        assert reader.readings(query) == {"gas_lel_pct": []}
    finally:
        reader.close()
    away = InfluxV1Readings(f"http://127.0.0.1:{free_port()}", "hazardwatch")
    try:
        with pytest.raises(StoreError, match="InfluxDB unreachable"):
            away.readings(query)
    finally:
        away.close()

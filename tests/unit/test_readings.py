"""A device's readings read back, downsampled: the parameters (range, bucket, fields), the
embedded store's means per bucket, and GET /api/v1/devices/{id}/readings' refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry

from api.app import create_app
from api.deps import ApiContext
from core.errors import InvalidInputError, StoreError
from core.points import Point
from core.readings import (
    MAX_POINTS,
    READING_FIELDS,
    ReadingsQuery,
    Series,
    epoch_ms,
    readings_query,
    smallest_every,
)
from core.registry.models import Device
from ingest.sinks.embedded import EmbeddedReadings, EmbeddedSink
from ingest.sinks.influx_v1 import readings_influxql
from ingest.sinks.influx_v2 import readings_flux

NOW = datetime(2026, 11, 22, 8, 0, 7, tzinfo=UTC)
ADMIN = "admin-token-0123456789abcdef"


def _query(**given: Any) -> ReadingsQuery:
    values: dict[str, Any] = {"start": None, "stop": None, "every_s": None, "fields": None}
    return readings_query("gas-1", **{**values, **given}, now=NOW)


# --- the parameters ----------------------------------------------------------------------


def test_without_parameters_the_last_day_of_every_field_in_at_most_1000_buckets() -> None:
    query = _query()
    assert (query.start, query.stop) == (NOW - timedelta(days=1), NOW)
    assert query.fields == READING_FIELDS
    assert query.every_s == 120  # 86,400 s / 1,000 = 86.4 s, to the next round step
    assert 86400 / query.every_s <= MAX_POINTS


@pytest.mark.parametrize("days", [1, 7, 30, 90])
def test_the_bucket_chosen_keeps_every_range_within_the_bound(days: int) -> None:
    start = NOW - timedelta(days=days)
    every = smallest_every(start, NOW)
    assert days * 86400 / every <= MAX_POINTS
    # ... and it is the smallest round step that does: half of it would give too many.
    assert days * 86400 / (every / 2) > MAX_POINTS


def test_a_bucket_too_small_is_raised_to_the_bound_and_a_larger_one_kept() -> None:
    week = {"start": NOW - timedelta(days=7)}
    assert _query(**week, every_s=1).every_s == smallest_every(NOW - timedelta(days=7), NOW)
    assert _query(**week, every_s=7200).every_s == 7200
    assert _query(start=NOW - timedelta(minutes=10), every_s=1).every_s == 1


def test_times_with_any_offset_are_taken_as_utc() -> None:
    shanghai = datetime.fromisoformat("2026-11-22T16:00:00+08:00")
    query = _query(start=shanghai - timedelta(hours=6), stop=shanghai)
    assert query.stop == datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert query.stop.utcoffset() == timedelta(0)


def test_only_from_given_reads_until_now_only_to_given_a_day_before_it() -> None:
    assert _query(start=NOW - timedelta(hours=3)).stop == NOW
    to = NOW - timedelta(days=3)
    assert _query(stop=to).start == to - timedelta(days=1)


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"start": NOW - timedelta(days=91)}, "at most 90 days"),
        ({"start": NOW, "stop": NOW - timedelta(hours=1)}, "`to` must be after `from`"),
        ({"start": NOW, "stop": NOW}, "`to` must be after `from`"),
        ({"start": datetime(1969, 12, 31, tzinfo=UTC)}, "between 1970-01-01 and 2200-01-01"),
        ({"stop": datetime(1970, 1, 1, 12, tzinfo=UTC)}, "a day or more after 1970"),
        ({"start": datetime(9999, 12, 30, tzinfo=UTC)}, "between 1970-01-01 and 2200-01-01"),
        ({"fields": ["gas_lel_pct,humidity"]}, "no reading field 'humidity'"),
        ({"fields": ["alarm"]}, "no reading field 'alarm'"),
    ],
)
def test_what_cannot_be_asked_is_refused_with_the_reason(
    given: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        _query(**given)


def test_fields_repeated_or_comma_separated_come_in_the_contracts_order() -> None:
    fields = _query(fields=["battery_pct,gas_lel_pct", " co_ppm ", ""]).fields
    assert fields == ("gas_lel_pct", "co_ppm", "battery_pct")


def test_the_influxql_and_flux_quote_the_device_and_ask_for_means_per_bucket() -> None:
    query = ReadingsQuery("it's\\x", NOW - timedelta(hours=1), NOW, 60, ("co_ppm",))
    influxql = readings_influxql(query)
    assert "\"device\" = 'it\\'s\\\\x'" in influxql
    assert 'mean("co_ppm") AS "co_ppm"' in influxql and "GROUP BY time(60s) fill(none)" in influxql
    assert f"time >= {epoch_ms(query.start)}ms AND time < {epoch_ms(NOW)}ms" in influxql
    flux = readings_flux("hazard${x}", query)
    assert 'from(bucket: "hazard\\${x}")' in flux and 'r.device == "it\'s\\\\x"' in flux
    assert "aggregateWindow(every: 60s, fn: mean, createEmpty: false" in flux


# --- the embedded store ------------------------------------------------------------------


def _reading(device: str, at: datetime, **fields: float | bool) -> Point:
    tags = {"institution": "inst-1", "device": device, "kind": "multi"}
    return Point("reading", tags, dict(fields), epoch_ms(at))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    sink = EmbeddedSink(tmp_path / "timeseries.sqlite")
    yield sink, EmbeddedReadings(sink.path)
    sink.close()


def test_the_embedded_store_gives_the_mean_of_each_field_per_bucket(store: Any) -> None:
    sink, reader = store
    start = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    values = [1.0, 2.5, 4.0, 7.25, 0.5, 3.0, 9.0]  # one a minute
    points = [
        _reading("gas-1", start + timedelta(minutes=i), gas_lel_pct=v, battery_pct=90.0 - i)
        for i, v in enumerate(values)
    ]
    points.append(_reading("gas-1", start + timedelta(minutes=1), co_ppm=12.0, alarm=True))
    points.append(_reading("gas-2", start, gas_lel_pct=99.0))  # another device
    points.append(Point("device_status", {"device": "gas-1"}, {"online": True}, epoch_ms(start)))
    sink.write(points)

    query = ReadingsQuery("gas-1", start, start + timedelta(minutes=10), 180, READING_FIELDS)
    series: Series = reader.readings(query)

    def expected(field: list[float]) -> list[tuple[datetime, float]]:
        buckets = [field[i : i + 3] for i in range(0, len(field), 3)]
        return [(start + timedelta(minutes=3 * n), sum(b) / len(b)) for n, b in enumerate(buckets)]

    assert series["gas_lel_pct"] == expected(values)
    assert series["battery_pct"] == expected([90.0 - i for i in range(len(values))])
    assert series["co_ppm"] == [(start, 12.0)]  # the bucket with no CO value is left out
    assert series["smoke_db_m"] == [] and series["rssi_dbm"] == []
    assert set(series) == set(READING_FIELDS)


def test_the_embedded_store_buckets_start_at_round_times_and_the_range_is_half_open(
    store: Any,
) -> None:
    sink, reader = store
    base = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    sink.write(
        [
            _reading("co-1", base + timedelta(seconds=s), co_ppm=float(s))
            for s in (50, 59, 60, 119, 120)
        ]
    )
    # From 08:00:50 to 08:02:00: 08:02:00 itself is outside; buckets at 08:00 and 08:01.
    query = ReadingsQuery("co-1", base + timedelta(seconds=50), base + timedelta(minutes=2), 60,
                          ("co_ppm",))  # fmt: skip
    assert reader.readings(query)["co_ppm"] == [
        (base, (50 + 59) / 2),
        (base + timedelta(minutes=1), (60 + 119) / 2),
    ]


def test_a_thousand_buckets_at_most_from_a_month_of_readings(store: Any) -> None:
    sink, reader = store
    stop = datetime(2026, 11, 22, tzinfo=UTC)
    start = stop - timedelta(days=30)
    every_2_min = [
        _reading("smoke-1", start + timedelta(minutes=2 * i), smoke_db_m=0.01 * (i % 7))
        for i in range(30 * 720)
    ]
    sink.write(every_2_min)
    query = readings_query(
        "smoke-1", start=start, stop=stop, every_s=None, fields=["smoke_db_m"], now=stop
    )
    series = reader.readings(query)["smoke_db_m"]
    assert len(series) == 30 * 86400 // query.every_s <= MAX_POINTS
    assert len(series) > MAX_POINTS / 2  # not a far coarser step than the bound needs


def test_an_unreadable_embedded_store_raises_a_store_error(tmp_path: Path) -> None:
    reader = EmbeddedReadings(tmp_path / "absent" / "timeseries.sqlite")
    with pytest.raises(StoreError, match="embedded store"):
        reader.readings(_query())


# --- the route ---------------------------------------------------------------------------


class _Registry:
    def device(self, device_id: str) -> Device | None:
        return (
            Device(id=device_id, institution="inst-1", kind="gas") if device_id == "gas-1" else None
        )


class _Away:
    def readings(self, query: ReadingsQuery) -> Series:
        raise StoreError("InfluxDB unreachable: ConnectError()", retryable=True)

    def close(self) -> None:
        pass


async def _get(url: str, readings: Any = None) -> httpx.Response:
    context = ApiContext(
        admin_token=ADMIN,
        registry=cast(Any, _Registry()),
        dead_letters=cast(Any, None),
        presence=cast(Any, None),
        metrics=CollectorRegistry(),
        readings=readings,
    )
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url="http://hazardwatch") as client:
        return await client.get(url, headers={"Authorization": f"Bearer {ADMIN}"})


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("from=2026-01-01T00:00:00%2B08:00&to=2026-06-01T00:00:00%2B08:00", "at most 90 days"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "`to` must be after `from`"),
        ("fields=gas_lel_pct,humidity", "no reading field 'humidity'"),
        ("from=2026-01-01T00:00:00", "timezone"),
        ("from=1700000000", "RFC 3339"),
        ("to=0001-01-01T00:00:00Z", "a day or more after 1970"),
        ("from=9999-12-31T23:59:59-01:00", "years 1 and 9999 in UTC"),
        ("every=0", "greater than or equal to 1"),
        ("every=99999999999999999999", "less than or equal to"),
    ],
)
async def test_bad_parameters_are_422_with_the_reason(query: str, reason: str) -> None:
    answer = await _get(f"/api/v1/devices/gas-1/readings?{query}", readings=_Away())
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(e["msg"] for e in detail)
    assert reason in text


async def test_an_unknown_device_is_404_and_a_store_away_503_with_the_reason() -> None:
    missing = await _get("/api/v1/devices/gas-9/readings", readings=_Away())
    assert missing.status_code == 404 and "no device 'gas-9'" in missing.json()["detail"]
    away = await _get("/api/v1/devices/gas-1/readings", readings=_Away())
    assert away.status_code == 503
    assert "time-series store does not answer" in away.json()["detail"]
    assert away.headers["Retry-After"] == "10"
    none = await _get("/api/v1/devices/gas-1/readings")
    assert none.status_code == 503 and "no time-series store" in none.json()["detail"]


async def test_the_answer_has_utc_times_and_the_bucket_used(tmp_path: Path) -> None:
    sink = EmbeddedSink(tmp_path / "timeseries.sqlite")
    now = datetime.now(UTC).replace(microsecond=0)
    sink.write([_reading("gas-1", now - timedelta(hours=2), gas_lel_pct=3.5)])
    sink.close()
    answer = await _get(
        "/api/v1/devices/gas-1/readings?fields=gas_lel_pct&every=1",
        readings=EmbeddedReadings(tmp_path / "timeseries.sqlite"),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["device"] == "gas-1" and body["every_s"] == 120
    assert list(body["fields"]) == ["gas_lel_pct"]
    [[at, value]] = body["fields"]["gas_lel_pct"]
    assert value == 3.5 and at.endswith("Z")
    bucket = datetime.fromisoformat(at)
    assert bucket <= now - timedelta(hours=2) < bucket + timedelta(seconds=120)
    assert body["to"].endswith("Z")
    assert datetime.fromisoformat(body["to"]) - datetime.fromisoformat(body["from"]) == timedelta(
        days=1
    )

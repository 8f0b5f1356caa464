"""Device messages become the points of contract section 2."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from core.clock import to_epoch_ms
from core.models import DeviceKind, Event, EventSource, EventType, FaultCode, Status, Telemetry
from core.points import Point
from ingest.points import to_points

TS = datetime(2026, 11, 22, 8, 0, 0, 120_000, tzinfo=UTC)
TS_MS = 1_795_334_400_120
IDS = {"institution": "inst-1", "device": "dev-1"}


def reading(ts: datetime = TS, **values: Any) -> Telemetry:
    return Telemetry(ts=ts, **IDS, **values)


def only(points: list[Point]) -> Point:
    assert len(points) == 1, points
    return points[0]


def test_a_full_reading() -> None:
    message = reading(
        seq=1042,
        kind=DeviceKind.GAS,
        smoke_db_m=0.1,
        gas_lel_pct=3.5,
        co_ppm=4,
        temperature_c=22.5,
        battery_pct=87,
        rssi_dbm=-71,
        alarm=False,
        faults=(FaultCode.LOW_BATTERY,),
    )
    point = only(to_points(message, None))
    assert point.measurement == "reading"
    assert point.tags == {"institution": "inst-1", "device": "dev-1", "kind": "gas"}
    assert point.fields == {
        "smoke_db_m": 0.1,
        "gas_lel_pct": 3.5,
        "co_ppm": 4.0,
        "temperature_c": 22.5,
        "battery_pct": 87.0,
        "rssi_dbm": -71.0,
        "alarm": False,
        "seq": 1042,
    }
    assert point.time_ms == TS_MS


def test_reading_field_types_follow_the_contract() -> None:
    point = only(to_points(reading(battery_pct=87, co_ppm=0, seq=5, alarm=True), None))
    # Integers from JSON are stored as floats, so a field never changes type in InfluxDB.
    assert type(point.fields["battery_pct"]) is float
    assert type(point.fields["co_ppm"]) is float
    assert type(point.fields["seq"]) is int
    assert point.fields["alarm"] is True
    assert all(type(v) is str for v in point.tags.values())


def test_absent_measurements_are_not_written() -> None:
    point = only(to_points(reading(temperature_c=21.0), None))
    assert point.fields == {"temperature_c": 21.0}


@pytest.mark.parametrize(
    ("registry_kind", "message_kind", "tag"),
    [
        ("smoke", DeviceKind.GAS, "smoke"),  # the registry wins on conflict
        ("co", None, "co"),
        (None, DeviceKind.MULTI, "multi"),
        (None, None, "unknown"),
    ],
)
def test_the_kind_tag(registry_kind: str | None, message_kind: DeviceKind | None, tag: str) -> None:
    point = only(to_points(reading(co_ppm=1, kind=message_kind), registry_kind))
    assert point.tags["kind"] == tag


def test_a_heartbeat_becomes_no_point() -> None:
    assert to_points(reading(seq=None), "smoke") == []
    assert to_points(reading(faults=(FaultCode.TAMPER,), kind=DeviceKind.GAS), None) == []


def test_a_heartbeat_with_a_seq_is_stored_for_gap_detection() -> None:
    point = only(to_points(reading(seq=7), "smoke"))
    assert point.fields == {"seq": 7}


def test_an_alarm_flag_alone_is_a_reading() -> None:
    assert only(to_points(reading(alarm=True), None)).fields == {"alarm": True}


def test_an_event() -> None:
    message = Event(
        ts=TS,
        **IDS,
        seq=1043,
        type=EventType.FAULT,
        source=EventSource.SMOKE,
        code=FaultCode.CHAMBER_DIRTY,
        detail="chamber 2.1 dB/m",
    )
    point = only(to_points(message, "smoke"))
    assert point.measurement == "device_event"
    assert point.tags == {"institution": "inst-1", "device": "dev-1", "type": "fault"}
    assert point.fields == {
        "source": "smoke",
        "code": "chamber_dirty",
        "detail": "chamber 2.1 dB/m",
        "seq": 1043,
    }
    assert type(point.fields["source"]) is str and type(point.fields["code"]) is str
    assert point.time_ms == TS_MS


def test_an_event_with_nothing_but_its_type_still_has_a_field() -> None:
    # Line protocol needs at least one field; without one the point could not be written.
    point = only(to_points(Event(ts=TS, **IDS, type=EventType.POWER_ON), None))
    assert point.tags["type"] == "power_on"
    assert point.fields == {"detail": ""}


def test_an_event_keeps_only_the_fields_it_has() -> None:
    point = only(to_points(Event(ts=TS, **IDS, type=EventType.HUSH, seq=0), None))
    assert point.fields == {"seq": 0}


@pytest.mark.parametrize("online", [True, False])
def test_a_status(online: bool) -> None:
    message = Status(ts=TS, **IDS, online=online, heartbeat_s=300, retained=True)
    point = only(to_points(message, "gas"))
    assert point.measurement == "device_status"
    assert point.tags == {"institution": "inst-1", "device": "dev-1"}
    assert point.fields == {"online": online, "reason": "reported"}
    assert point.time_ms == TS_MS


def test_time_is_epoch_milliseconds_whatever_the_offset() -> None:
    east = TS.astimezone(timezone(timedelta(hours=8)))
    assert only(to_points(reading(co_ppm=1, ts=east), None)).time_ms == TS_MS
    assert (
        only(to_points(reading(co_ppm=1, ts=datetime(1970, 1, 1, tzinfo=UTC)), None)).time_ms == 0
    )


def test_time_drops_sub_millisecond_digits() -> None:
    ts = datetime(2026, 11, 22, 8, 0, 0, 120_999, tzinfo=UTC)
    assert only(to_points(reading(co_ppm=1, ts=ts), None)).time_ms == TS_MS


@pytest.mark.parametrize(
    "iso",
    [
        "2004-02-22T07:01:02.804+00:00",  # once stored as ...803 (float rounding)
        "2038-09-06T08:54:25.970+00:00",
        "1972-02-28T03:07:10.005+00:00",
    ],
)
def test_time_keeps_every_exact_millisecond(iso: str) -> None:
    ts = datetime.fromisoformat(iso)
    expected = int(iso[20:23]) + 1000 * int(ts.replace(microsecond=0).timestamp())
    assert only(to_points(reading(co_ppm=1, ts=ts), None)).time_ms == expected


def test_to_epoch_ms_is_exact_across_the_years() -> None:
    rng = random.Random(7)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        ms = rng.randrange(0, 4_000_000_000_000)  # 1970 to 2096
        assert to_epoch_ms(epoch + timedelta(milliseconds=ms)) == ms

"""The parser against contract section 1: good messages typed, bad ones rejected with a reason."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub

from core.models import (
    MAX_PAYLOAD_BYTES,
    DeviceKind,
    Event,
    EventSource,
    EventType,
    FaultCode,
    Status,
    Telemetry,
)
from ingest.messages import Accepted, RawMessage, Rejected, Verdict
from ingest.parser import Parser, Reason

RECEIVED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
BASE = "hazardwatch/v1/inst-1/dev-1"
TELEMETRY = f"{BASE}/telemetry"
EVENT = f"{BASE}/event"
STATUS = f"{BASE}/status"

# The examples of contract section 1, verbatim.
TELEMETRY_EXAMPLE = (
    b'{"ts": "2026-11-22T08:00:00.120Z", "seq": 1042, "kind": "gas",\n'
    b' "gas_lel_pct": 3.5, "temperature_c": 22.5, "battery_pct": 87, "rssi_dbm": -71,\n'
    b' "alarm": false, "faults": []}'
)
EVENT_EXAMPLE = (
    b'{"ts": 1763798400120, "seq": 1043, "type": "alarm", "source": "smoke",'
    b' "detail": "chamber 2.1 dB/m"}'
)

REASONS = {value for name, value in vars(Reason).items() if name.isupper()}


def parse(topic: str, payload: bytes | str, *, parser: Parser | None = None, **kw: Any) -> Verdict:
    body = payload.encode() if isinstance(payload, str) else payload
    return (parser or Parser()).parse(RawMessage(topic, body, RECEIVED, **kw))


def accepted(topic: str, payload: bytes | str, **kw: Any) -> Telemetry | Event | Status:
    verdict = parse(topic, payload, **kw)
    assert isinstance(verdict, Accepted), verdict
    return verdict.message


def telemetry(payload: dict[str, Any] | bytes | str) -> Telemetry:
    body = json.dumps(payload) if isinstance(payload, dict) else payload
    message = accepted(TELEMETRY, body)
    assert isinstance(message, Telemetry)
    return message


def event(payload: dict[str, Any]) -> Event:
    message = accepted(EVENT, json.dumps(payload))
    assert isinstance(message, Event)
    return message


def status(payload: bytes | str, **kw: Any) -> Status:
    message = accepted(STATUS, payload, **kw)
    assert isinstance(message, Status)
    return message


def rejected(topic: str, payload: bytes | str, *, parser: Parser | None = None) -> Rejected:
    verdict = parse(topic, payload, parser=parser)
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason in REASONS
    assert verdict.detail
    return verdict


def reason(topic: str, payload: bytes | str | dict[str, Any]) -> str:
    body = json.dumps(payload) if isinstance(payload, dict) else payload
    return rejected(topic, body).reason


# --- the contract's examples -------------------------------------------------------------------


def test_the_contract_telemetry_example_is_accepted_with_typed_values() -> None:
    raw = RawMessage(TELEMETRY, TELEMETRY_EXAMPLE, RECEIVED)
    verdict = Parser().parse(raw)
    assert isinstance(verdict, Accepted)
    assert verdict.raw is raw
    message = verdict.message
    assert isinstance(message, Telemetry)
    assert (message.institution, message.device) == ("inst-1", "dev-1")
    assert message.ts == datetime(2026, 11, 22, 8, 0, 0, 120_000, tzinfo=UTC)
    assert message.ts_from_device is True
    assert message.seq == 1042
    assert type(message.seq) is int
    assert message.kind is DeviceKind.GAS
    assert message.gas_lel_pct == 3.5
    assert message.temperature_c == 22.5
    assert message.battery_pct == 87.0
    assert message.rssi_dbm == -71.0
    assert message.alarm is False
    assert message.faults == ()
    assert message.smoke_db_m is None and message.co_ppm is None
    assert not message.is_heartbeat


def test_the_contract_event_example_is_accepted_with_typed_values() -> None:
    # Its ts is 2025-11-22, a year before the telemetry example: received then, not a year on.
    verdict = Parser().parse(
        RawMessage(EVENT, EVENT_EXAMPLE, datetime(2025, 11, 22, 8, 1, tzinfo=UTC))
    )
    assert isinstance(verdict, Accepted), verdict
    message = verdict.message
    assert isinstance(message, Event)
    assert message.ts == datetime(2025, 11, 22, 8, 0, 0, 120_000, tzinfo=UTC)
    assert message.ts_from_device is True
    assert message.seq == 1043
    assert message.type is EventType.ALARM
    assert message.source is EventSource.SMOKE
    assert message.code is None
    assert message.detail == "chamber 2.1 dB/m"


def test_a_fault_event_carries_its_code() -> None:
    message = event({"type": "fault", "code": "chamber_dirty", "source": "smoke", "seq": 0})
    assert message.type is EventType.FAULT
    assert message.code is FaultCode.CHAMBER_DIRTY
    assert message.seq == 0


def test_a_detail_with_a_nul_character_is_a_dead_letter_with_its_reason() -> None:
    """Valid JSON and Unicode, but PostgreSQL stores no NUL: the alert carrying it would never
    reach the SQL tables (its projection retrying for ever, holding back every later one)."""
    found = rejected(EVENT, json.dumps({"type": "fault", "code": "other", "detail": "坏\u0000了"}))
    assert (found.reason, "NUL" in found.detail) == ("invalid_field", True)
    assert event({"type": "fault", "code": "other", "detail": "光室\t故障"}).detail == "光室\t故障"


@pytest.mark.parametrize("kind", list(EventType))
def test_every_event_type_of_the_contract_is_accepted(kind: EventType) -> None:
    body = {"type": kind.value}
    if kind in (EventType.FAULT, EventType.FAULT_CLEAR):
        body["code"] = "sensor_fault"
    assert event(body).type is kind


@pytest.mark.parametrize("kind", ["fault", "fault_clear"])
def test_a_fault_event_without_a_code_is_a_dead_letter(kind: str) -> None:
    verdict = parse(EVENT, json.dumps({"type": kind}))
    assert isinstance(verdict, Rejected)
    assert verdict.reason == Reason.INVALID_FIELD
    assert f"a {kind} event needs a fault code" in verdict.detail


def test_every_fault_code_of_the_contract_is_accepted_in_telemetry() -> None:
    codes = [code.value for code in FaultCode]
    assert telemetry({"faults": codes}).faults == tuple(FaultCode)


@pytest.mark.parametrize("state", ["online", "offline"])
def test_a_plain_status_payload_is_accepted(state: str) -> None:
    message = status(state, retained=True)
    assert message.online is (state == "online")
    assert message.retained is True
    assert message.ts == RECEIVED
    assert message.ts_from_device is False
    assert message.heartbeat_s is None
    assert message.seq is None


def test_a_plain_status_payload_may_end_with_a_newline() -> None:
    assert status(b"offline\n").online is False


def test_the_json_status_form_carries_the_heartbeat_and_the_device_time() -> None:
    message = status(b'{"state": "online", "ts": "2026-11-22T07:59:00Z", "heartbeat_s": 300}')
    assert message.online is True
    assert message.heartbeat_s == 300
    assert message.ts == datetime(2026, 11, 22, 7, 59, tzinfo=UTC)
    assert message.ts_from_device is True


def test_the_json_status_form_without_ts_uses_the_receive_time() -> None:
    message = status(b'{"state": "offline"}')
    assert message.online is False
    assert message.ts == RECEIVED
    assert message.ts_from_device is False


# --- telemetry shapes ---------------------------------------------------------------------------


def test_a_telemetry_message_without_measurements_is_a_heartbeat() -> None:
    beat = telemetry({"seq": 7, "kind": "smoke", "faults": ["low_battery"]})
    assert beat.is_heartbeat
    assert beat.faults == (FaultCode.LOW_BATTERY,)
    assert telemetry(b"{}").is_heartbeat


@pytest.mark.parametrize(
    "field",
    ["smoke_db_m", "gas_lel_pct", "co_ppm", "temperature_c", "battery_pct", "rssi_dbm"],
)
def test_any_one_measurement_makes_it_a_reading(field: str) -> None:
    message = telemetry({field: 0})
    assert getattr(message, field) == 0.0
    assert not message.is_heartbeat


def test_an_alarm_flag_alone_is_not_a_heartbeat() -> None:
    assert not telemetry({"alarm": True}).is_heartbeat


def test_unknown_extra_keys_are_ignored() -> None:
    message = telemetry({"co_ppm": 12, "firmware": "1.2.3", "extra": {"nested": [1, 2]}})
    assert message.co_ppm == 12.0
    assert not hasattr(message, "firmware")
    assert event({"type": "test", "button": "long-press"}).type is EventType.TEST
    assert status(b'{"state": "online", "uptime_s": 12}').online is True


@pytest.mark.parametrize("value", ["event", "status", None, 1, {"a": 1}])
def test_a_channel_key_in_the_payload_is_ignored_as_any_unknown_key(value: object) -> None:
    # `channel` is a field of the models, not of the contract: it was validated, and refused.
    assert telemetry({"co_ppm": 12, "channel": value}).co_ppm == 12.0
    assert event({"type": "test", "channel": value}).type is EventType.TEST
    assert status(json.dumps({"state": "online", "channel": value})).online is True


def test_the_topic_wins_over_ids_in_the_payload() -> None:
    message = telemetry({"institution": "other", "device": "other", "ts_from_device": False})
    assert (message.institution, message.device) == ("inst-1", "dev-1")
    assert message.ts_from_device is False  # no ts: the receive time, whatever the payload says


def test_null_optional_fields_count_as_absent() -> None:
    message = telemetry({"battery_pct": None, "alarm": None, "seq": None, "kind": None})
    assert (message.battery_pct, message.alarm, message.seq, message.kind) == (None,) * 4
    assert message.is_heartbeat


def test_boundary_values_are_accepted() -> None:
    message = telemetry({"gas_lel_pct": 100, "battery_pct": 0, "smoke_db_m": 0, "co_ppm": 0})
    assert (message.gas_lel_pct, message.battery_pct) == (100.0, 0.0)
    assert telemetry({"temperature_c": -40.5, "rssi_dbm": -120}).temperature_c == -40.5


# --- timestamps ---------------------------------------------------------------------------------


def test_missing_ts_uses_the_receive_time() -> None:
    message = telemetry({"seq": 1})
    assert message.ts == RECEIVED
    assert message.ts_from_device is False


def test_null_ts_counts_as_missing() -> None:
    message = telemetry({"ts": None})
    assert (message.ts, message.ts_from_device) == (RECEIVED, False)


def test_ts_as_epoch_milliseconds() -> None:
    message = telemetry({"ts": 1795334399120})
    assert message.ts == datetime(2026, 11, 22, 7, 59, 59, 120_000, tzinfo=UTC)
    assert message.ts_from_device is True


def test_ts_with_an_offset_is_converted_to_utc() -> None:
    message = telemetry({"ts": "2026-11-22T15:59:00+08:00"})
    assert message.ts == datetime(2026, 11, 22, 7, 59, tzinfo=UTC)
    assert message.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-22T08:05:00Z",  # exactly 5 minutes ahead: the limit itself is fine
        "2026-11-22T08:04:59.999Z",
        1795334700000,  # the same limit in epoch ms
        "2026-11-22T08:00:00Z",
        "2026-10-24T08:00:00Z",  # 29 days old: devices buffer readings while offline
    ],
)
def test_ts_up_to_five_minutes_ahead_is_accepted(ts: str | int) -> None:
    assert telemetry({"ts": ts}).ts_from_device is True


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-22T08:05:00.001Z",
        "2026-11-22T16:05:01+08:00",
        1795334700001,
        "2027-01-01T00:00:00Z",
    ],
)
def test_ts_more_than_five_minutes_ahead_is_rejected(ts: str | int) -> None:
    assert reason(TELEMETRY, {"ts": ts}) == Reason.FUTURE_TIMESTAMP
    assert reason(EVENT, {"ts": ts, "type": "alarm"}) == Reason.FUTURE_TIMESTAMP
    assert reason(STATUS, {"ts": ts, "state": "online"}) == Reason.FUTURE_TIMESTAMP


@pytest.mark.parametrize(
    ("ts", "shown", "bound"),
    [
        (0, "1970-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00"),  # a clock never set
        (86_400_000, "1970-01-02T00:00:00+00:00", "2020-01-01T00:00:00+00:00"),
        ("1970-01-01T00:00:05Z", "1970-01-01T00:00:05+00:00", "2020-01-01T00:00:00+00:00"),
        ("2019-12-31T23:59:59Z", "2019-12-31T23:59:59+00:00", "2020-01-01T00:00:00+00:00"),
        # 31 days before the receive time; the bound is 30 days before it
        ("2026-10-22T08:00:00Z", "2026-10-22T08:00:00+00:00", "2026-10-23T08:00:00+00:00"),
        (1792656000000, "2026-10-22T08:00:00+00:00", "2026-10-23T08:00:00+00:00"),
    ],
)
def test_ts_too_old_is_a_dead_letter_naming_the_time_and_the_bound(
    ts: str | int, shown: str, bound: str
) -> None:
    bodies = {
        TELEMETRY: {"ts": ts, "seq": 3},
        EVENT: {"ts": ts, "type": "alarm"},
        STATUS: {"ts": ts, "state": "online"},
    }
    for topic, body in bodies.items():
        verdict = rejected(topic, json.dumps(body))
        assert verdict.reason == Reason.STALE_TIMESTAMP
        assert verdict.detail.startswith(f"ts {shown} is before {bound}"), verdict.detail
        assert (verdict.institution, verdict.device) == ("inst-1", "dev-1")


def test_the_age_limit_is_the_parsers_setting() -> None:
    parser = Parser(max_past=timedelta(days=2))
    three_days = json.dumps({"ts": "2026-11-19T08:00:00Z"})
    verdict = rejected(TELEMETRY, three_days, parser=parser)
    assert verdict.reason == Reason.STALE_TIMESTAMP
    assert "2026-11-20T08:00:00+00:00, 2 days before the receive time" in verdict.detail
    assert isinstance(parse(TELEMETRY, three_days), Accepted)  # the default allows 30 days
    # However long the limit, a time before 2020 is a clock that was never set.
    assert (
        rejected(
            TELEMETRY,
            json.dumps({"ts": "2019-06-01T00:00:00Z"}),
            parser=Parser(max_past=timedelta(days=3650)),
        ).reason
        == Reason.STALE_TIMESTAMP
    )


def test_the_age_limit_counts_from_the_receive_time_not_the_clock() -> None:
    old = datetime(2021, 3, 1, tzinfo=UTC)
    raw = RawMessage(TELEMETRY, b'{"ts": "2021-02-20T00:00:00Z"}', old)  # 9 days before receipt
    verdict = Parser().parse(raw)
    assert isinstance(verdict, Accepted)
    assert verdict.message.ts == datetime(2021, 2, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-22T08:00:00",  # no offset: RFC 3339 requires one
        "2026-11-22",
        "yesterday",
        "",
        1.5,  # epoch ms must be an integer
        1795334400000.0,
        True,
        ["2026-11-22T08:00:00Z"],
        {"ms": 1},
        10**30,  # far beyond any datetime
    ],
)
def test_bad_timestamps_are_rejected(ts: object) -> None:
    assert reason(TELEMETRY, {"ts": ts}) == Reason.BAD_TIMESTAMP
    assert reason(EVENT, {"ts": ts, "type": "alarm"}) == Reason.BAD_TIMESTAMP


@pytest.mark.parametrize(
    "ts",
    [
        # Python 3.11's datetime.fromisoformat stops reading at a NUL: these were 08:00:00 UTC.
        "2026-11-22T08:00:00\u0000Z",
        "2026-11-22T08:00:00Z\u0000 and anything after",
        # ISO 8601 forms that fromisoformat reads and RFC 3339 does not have; all were accepted.
        "2026-11-22T08:00:00+05:99",  # read as +06:39
        "2026-11-22T08:00:00+05:60",
        "2026-11-22T08:00:00+0800",
        "2026-11-22T08:00:00+08",
        "2026-11-22T08:00:00.Z",
        "2026-11-22T08:00:00,5Z",
        "2026-11-22T08Z",
        "2026-11-22T08:00Z",
        "20261122T080000Z",
        "2026-W47-7T08:00:00Z",
        "2026-11-22x08:00:00Z",
        "2026-11-22T08:00:00\u0660Z",
    ],
)
def test_a_ts_that_is_no_rfc_3339_time_is_a_bad_timestamp(ts: str) -> None:
    for topic, body in (
        (TELEMETRY, {"ts": ts}),
        (EVENT, {"ts": ts, "type": "alarm"}),
        (STATUS, {"ts": ts, "state": "online"}),
    ):
        verdict = rejected(topic, json.dumps(body))
        assert verdict.reason == Reason.BAD_TIMESTAMP, (topic, verdict)
        assert "RFC 3339" in verdict.detail


@pytest.mark.parametrize(
    ("ts", "meant"),
    [
        # RFC 3339 section 5.6: "T" and "Z" may be lower case; a space may separate the parts.
        ("2026-11-22t07:59:00z", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22 07:59:00Z", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22T07:59:00-00:00", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-23T07:58:00+23:59", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22T07:59:00.123456789Z", datetime(2026, 11, 22, 7, 59, 0, 123456, tzinfo=UTC)),
    ],
)
def test_every_rfc_3339_form_is_read(ts: str, meant: datetime) -> None:
    assert telemetry({"ts": ts}).ts == meant


# --- bad input, one reason each -----------------------------------------------------------------


def test_an_oversized_payload_is_rejected() -> None:
    padding = "x" * (MAX_PAYLOAD_BYTES + 1 - len('{"pad": ""}'))
    too_big = json.dumps({"pad": padding})
    assert len(too_big.encode()) == MAX_PAYLOAD_BYTES + 1
    assert reason(TELEMETRY, too_big) == Reason.OVERSIZED
    assert reason(STATUS, b"online" + b" " * MAX_PAYLOAD_BYTES) == Reason.OVERSIZED


def test_a_payload_of_exactly_16_kib_is_allowed() -> None:
    padding = "x" * (MAX_PAYLOAD_BYTES - len('{"pad": ""}'))
    body = json.dumps({"pad": padding})
    assert len(body.encode()) == MAX_PAYLOAD_BYTES
    assert telemetry(body).is_heartbeat


@pytest.mark.parametrize("topic", [TELEMETRY, EVENT, STATUS])
def test_a_payload_that_is_not_utf8_is_rejected(topic: str) -> None:
    assert reason(topic, b'{"detail": "\xff\xfe"}') == Reason.BAD_ENCODING
    assert reason(topic, "温度".encode("gbk")) == Reason.BAD_ENCODING


@pytest.mark.parametrize(
    "payload", [b"{", b"{'seq': 1}", b'{"seq": 1,}', b"online please", b"[" * 5000]
)
def test_a_payload_that_is_not_json_is_rejected(payload: bytes) -> None:
    assert reason(TELEMETRY, payload) == Reason.BAD_JSON
    assert reason(EVENT, payload) == Reason.BAD_JSON


@pytest.mark.parametrize("topic", [TELEMETRY, EVENT, STATUS])
def test_an_empty_payload_has_its_own_reason(topic: str) -> None:
    assert reason(topic, b"") == Reason.EMPTY


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    assert reason(TELEMETRY, f'{{"temperature_c": {constant}}}') == Reason.BAD_JSON
    assert reason(STATUS, f'{{"state": "online", "heartbeat_s": {constant}}}') == Reason.BAD_JSON


def test_a_number_too_large_for_a_float_is_not_accepted_as_infinity() -> None:
    # orjson refuses a number outside the float range while decoding, as json.loads does not.
    assert reason(TELEMETRY, '{"temperature_c": 1e999}') == Reason.BAD_JSON


@pytest.mark.parametrize("payload", ["[]", '[{"seq": 1}]', "42", '"online"', "null", "true"])
def test_json_that_is_not_an_object_is_rejected(payload: str) -> None:
    assert reason(TELEMETRY, payload) == Reason.NOT_AN_OBJECT
    assert reason(EVENT, payload) == Reason.NOT_AN_OBJECT
    assert reason(STATUS, payload) == Reason.NOT_AN_OBJECT


@pytest.mark.parametrize(
    "topic",
    [
        f"{BASE}/heartbeat",  # unknown channel
        f"{BASE}/Telemetry",
        f"{BASE}/",
        "hazardwatch/v1/inst-1/telemetry",  # too short
        "hazardwatch/v1/inst-1/dev-1/telemetry/extra",  # too long
        "hazardwatch/v1/inst-1/zone/dev-1/telemetry",
        "hazardwatch/v2/inst-1/dev-1/telemetry",  # another prefix
        "hazard/v1/inst-1/dev-1/telemetry",
        "/hazardwatch/v1/inst-1/dev-1/telemetry",
        "hazardwatch/alerts/inst-1/alert-1",
        "",
    ],
)
def test_an_unknown_topic_is_rejected_without_ids(topic: str) -> None:
    verdict = rejected(topic, b"{}")
    assert verdict.reason == Reason.UNKNOWN_TOPIC
    assert (verdict.institution, verdict.device) == (None, None)


@pytest.mark.parametrize(
    ("institution", "device"),
    [
        ("", "dev-1"),  # an empty level that is not a doubled slash: an id left empty
        ("inst-1", ""),
        ("-inst", "dev-1"),  # must start with a letter or digit
        ("inst-1", ".dev"),
        ("inst-1", "_dev"),
        ("inst 1", "dev-1"),
        ("inst-1", "dev+1"),
        ("inst-1", "dev#1"),
        ("机构", "dev-1"),
        ("a" * 65, "dev-1"),
        ("inst-1", "d" * 65),
        # `$` of the id pattern also matches before a final newline: the whole id must match
        # (these were accepted, and the registry then refused the id: an internal_error).
        ("inst-1\n", "dev-1"),
        ("inst-1", "dev-1\n"),
    ],
)
def test_invalid_ids_are_rejected(institution: str, device: str) -> None:
    verdict = rejected(f"hazardwatch/v1/{institution}/{device}/telemetry", b"{}")
    assert verdict.reason == Reason.INVALID_ID
    assert (verdict.institution, verdict.device) == (None, None)


@pytest.mark.parametrize(
    "topic",
    [
        "hazardwatch/v1/inst-1//dev-1/telemetry",
        "hazardwatch/v1//inst-1/dev-1/telemetry",
        "hazardwatch/v1/inst-1/dev-1//telemetry",
        "hazardwatch//v1/inst-1///dev-1/telemetry",
    ],
)
def test_a_doubled_slash_inside_the_topic_names_the_same_device(topic: str) -> None:
    message = accepted(topic, b'{"seq": 5}')
    assert (message.institution, message.device, message.seq) == ("inst-1", "dev-1", 5)


@pytest.mark.parametrize(
    "topic",
    [
        "hazardwatch/v1/inst-1/dev-1/telemetry/",
        "hazardwatch/v1/inst-1/dev-1/status//",
        "hazardwatch/v1/inst-1//dev-1/zone/telemetry",
        "/hazardwatch/v1/inst-1/dev-1/telemetry",
    ],
)
def test_slashes_at_either_end_or_a_level_too_many_stay_unknown(topic: str) -> None:
    verdict = rejected(topic, b"{}")
    assert verdict.reason == Reason.UNKNOWN_TOPIC
    assert (verdict.institution, verdict.device) == (None, None)


def test_ids_of_the_longest_allowed_form_are_accepted() -> None:
    institution, device = "A" + "b" * 63, "0_.-" + "z" * 60
    message = accepted(f"hazardwatch/v1/{institution}/{device}/event", b'{"type": "test"}')
    assert (message.institution, message.device) == (institution, device)


@pytest.mark.parametrize(
    "payload",
    [
        {"gas_lel_pct": "3"},  # a string is not a number
        {"temperature_c": "22.5"},
        {"alarm": 1},  # 1 is not a boolean
        {"alarm": "true"},
        {"seq": True},  # a boolean is not a counter
        {"seq": 3.0},  # nor is a float, even a whole one
        {"seq": "3"},
        {"kind": 1},
        {"faults": "tamper"},  # an array of codes, not one code
        {"faults": [1]},
        {"smoke_db_m": [1.0]},
        {"co_ppm": {"value": 3}},
    ],
)
def test_wrong_types_are_rejected(payload: dict[str, Any]) -> None:
    verdict = rejected(TELEMETRY, json.dumps(payload))
    assert verdict.reason == Reason.INVALID_FIELD
    assert next(iter(payload)) in verdict.detail
    assert (verdict.institution, verdict.device) == ("inst-1", "dev-1")


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "alarm", "seq": True},
        {"type": "alarm", "seq": 3.0},
        {"type": "alarm", "detail": 42},
        {"type": "alarm", "detail": "x" * 1025},
        {"type": 1},
        {"seq": 1},  # type is required
    ],
)
def test_wrong_event_fields_are_rejected(payload: dict[str, Any]) -> None:
    assert reason(EVENT, payload) == Reason.INVALID_FIELD


@pytest.mark.parametrize(
    "payload",
    [
        {"gas_lel_pct": 101},
        {"gas_lel_pct": -0.1},
        {"battery_pct": -1},
        {"battery_pct": 100.5},
        {"seq": -1},
        {"smoke_db_m": -0.5},
        {"co_ppm": -3},
    ],
)
def test_out_of_range_numbers_are_rejected(payload: dict[str, Any]) -> None:
    verdict = rejected(TELEMETRY, json.dumps(payload))
    assert verdict.reason == Reason.INVALID_FIELD
    assert next(iter(payload)) in verdict.detail


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (TELEMETRY, {"kind": "laser"}),
        (TELEMETRY, {"kind": "GAS"}),
        (TELEMETRY, {"faults": ["on_fire"]}),
        (EVENT, {"type": "explosion"}),
        (EVENT, {"type": "alarm", "source": "fire"}),
        (EVENT, {"type": "fault", "code": "broken"}),
    ],
)
def test_unknown_enum_values_are_rejected(topic: str, payload: dict[str, Any]) -> None:
    assert reason(topic, payload) == Reason.INVALID_FIELD


@pytest.mark.parametrize(
    "payload",
    [
        b'{"state": "maybe"}',
        b'{"state": "ONLINE"}',
        b'{"state": true}',
        b'{"online": true}',
        b"{}",
    ],
)
def test_a_bad_status_state_is_rejected(payload: bytes) -> None:
    verdict = rejected(STATUS, payload)
    assert verdict.reason == Reason.BAD_STATUS
    assert (verdict.institution, verdict.device) == ("inst-1", "dev-1")


@pytest.mark.parametrize("heartbeat", ["300", True, 0, -5, 30.5, 7 * 24 * 3600 + 1])
def test_a_bad_status_heartbeat_is_rejected(heartbeat: object) -> None:
    body = json.dumps({"state": "online", "heartbeat_s": heartbeat})
    assert reason(STATUS, body) == Reason.INVALID_FIELD


def test_a_plain_status_word_in_another_case_is_not_a_status() -> None:
    assert reason(STATUS, b"ONLINE") == Reason.BAD_JSON


# --- prefix and subscriptions -------------------------------------------------------------------


def test_a_custom_prefix_is_used_for_parsing() -> None:
    parser = Parser("a/b/c")
    verdict = parse("a/b/c/inst-9/dev-9/event", b'{"type": "power_on"}', parser=parser)
    assert isinstance(verdict, Accepted)
    assert (verdict.message.institution, verdict.message.device) == ("inst-9", "dev-9")
    assert rejected(TELEMETRY, b"{}", parser=parser).reason == Reason.UNKNOWN_TOPIC
    assert rejected("a/b/inst-9/dev-9/event", b"{}", parser=parser).reason == Reason.UNKNOWN_TOPIC


def test_slashes_around_the_prefix_do_not_matter() -> None:
    verdict = parse("a/b/c/inst-9/dev-9/status", b"online", parser=Parser("/a/b/c/"))
    assert isinstance(verdict, Accepted)


@pytest.mark.parametrize("prefix", ["hazardwatch/v1", "a/b/c", "site"])
def test_subscriptions_cover_every_device_channel_and_nothing_outside_the_prefix(
    prefix: str,
) -> None:
    filters = Parser(prefix).subscriptions
    assert filters
    assert all(f.startswith(prefix + "/") for f in filters)
    for channel in ("telemetry", "event", "status"):
        topic = f"{prefix}/inst-1/dev-1/{channel}"
        assert any(topic_matches_sub(f, topic) for f in filters), (topic, filters)
    # hazardwatch publishes its alerts outside the device tree and must not receive them back.
    for outside in ("hazardwatch/alerts/inst-1/a-1", "other/inst-1/dev-1/telemetry"):
        assert not any(topic_matches_sub(f, outside) for f in filters), (outside, filters)


# --- robustness ---------------------------------------------------------------------------------


def _random_text(rng: random.Random, size: int) -> str:
    alphabet = 'abcXYZ019_.-/ +#\x00é温度\u202e{}[]":,'
    return "".join(rng.choice(alphabet) for _ in range(size))


def _random_topic(rng: random.Random) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        return _random_text(rng, rng.randrange(0, 60))
    channel = rng.choice(["telemetry", "event", "status", "telemetry", "event", "status", "x"])
    ids = [_random_text(rng, rng.randrange(0, 8)) for _ in range(2)]
    if choice >= 2:
        ids = ["inst-1", "dev-1"]
    return "/".join(["hazardwatch", "v1", *ids, channel])


def _random_payload(rng: random.Random) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if choice == 1:
        return _random_text(rng, rng.randrange(0, 200)).encode()
    value: object = rng.choice(
        [None, True, -1, 0, 2**70, 3.5, -1e308, "", "online", [], {}, [1, "a"], {"a": None}]
    )
    keys = ["ts", "seq", "kind", "type", "source", "code", "detail", "state", "heartbeat_s"]
    keys += ["smoke_db_m", "gas_lel_pct", "co_ppm", "alarm", "faults", "battery_pct"]
    body = {rng.choice(keys): value for _ in range(rng.randrange(0, 4))}
    text = json.dumps(body)
    if choice == 3 and text:
        # Mutate a byte or two of an otherwise plausible document.
        data = bytearray(text.encode())
        for _ in range(rng.randrange(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    return text.encode()


def test_the_parser_never_raises_on_random_input() -> None:
    rng = random.Random(20261122)
    parser = Parser()
    outcomes: dict[str, int] = {}
    for _ in range(600):
        topic = _random_topic(rng)
        raw = RawMessage(
            topic, _random_payload(rng), RECEIVED, retained=rng.random() < 0.5, dup=False
        )
        verdict = parser.parse(raw)  # must not raise
        assert verdict.raw is raw
        if isinstance(verdict, Rejected):
            assert verdict.reason in REASONS
            assert isinstance(verdict.detail, str) and verdict.detail
            key = verdict.reason
        else:
            assert isinstance(verdict, Accepted)
            key = "accepted"
        outcomes[key] = outcomes.get(key, 0) + 1
    # The generator must reach deep into the parser, not only trip over the topic.
    assert {"accepted", Reason.UNKNOWN_TOPIC, Reason.INVALID_ID, Reason.BAD_JSON} <= set(outcomes)
    assert len(outcomes) >= 7, outcomes

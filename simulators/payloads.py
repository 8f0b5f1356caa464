"""Pure builders of device payloads (contract section 1), good and deliberately bad."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Final, Literal, NamedTuple

from core.models import MAX_FUTURE_SKEW_S, MAX_PAYLOAD_BYTES, DeviceKind, EventSource, EventType

DEFAULT_PREFIX: Final = "hazardwatch/v1"
OFFLINE: Final = b"offline"
MALFORMED: Final = "malformed"

TsStyle = Literal["rfc3339", "epoch_ms"]
Payload = dict[str, object]


class Outgoing(NamedTuple):
    """One MQTT publish: topic, bytes, what it counts as, and the retain flag."""

    topic: str
    payload: bytes
    label: str  # a core.models.Channel value, or MALFORMED
    retain: bool = False


def topic(prefix: str, institution: str, device: str, channel: str) -> str:
    """The device topic `{prefix}/{institution}/{device}/{channel}`."""
    return f"{prefix.strip('/')}/{institution}/{device}/{channel}"


@lru_cache(maxsize=8)
def _second_prefix(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s))


def rfc3339_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds and `Z`, e.g. `2026-11-22T08:00:00.120Z`."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_second_prefix(seconds)}.{millis:03d}Z"


def device_ts(epoch_ms: int, style: TsStyle) -> str | int:
    """The `ts` field in the style a device model uses."""
    return rfc3339_ms(epoch_ms) if style == "rfc3339" else epoch_ms


# One encoder for all: json.dumps with non-default options builds a new one on every call.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(payload: Mapping[str, object] | list[object]) -> bytes:
    """Compact UTF-8 JSON, as a constrained device would send it."""
    return _ENCODER.encode(payload).encode()


def telemetry_payload(
    *,
    ts: str | int | None,
    seq: int | None,
    kind: DeviceKind | None,
    readings: Mapping[str, float | int] | None = None,
    alarm: bool | None = None,
    faults: Iterable[str] | None = None,
) -> Payload:
    """A telemetry object; with no readings and no alarm it is a heartbeat."""
    body: Payload = {}
    if ts is not None:
        body["ts"] = ts
    if seq is not None:
        body["seq"] = seq
    if kind is not None:
        body["kind"] = kind.value
    if readings:
        body.update(readings)
    if alarm is not None:
        body["alarm"] = alarm
    if faults is not None:
        body["faults"] = list(faults)
    return body


def event_payload(
    *,
    ts: str | int | None,
    seq: int | None,
    type: EventType,  # the contract's field name
    source: EventSource | None = None,
    code: str | None = None,
    detail: str | None = None,
) -> Payload:
    """An event object; `fault`/`fault_clear` need a `code`."""
    if type in (EventType.FAULT, EventType.FAULT_CLEAR) and code is None:
        raise ValueError(f"a {type.value} event needs a fault code")
    body: Payload = {}
    if ts is not None:
        body["ts"] = ts
    if seq is not None:
        body["seq"] = seq
    body["type"] = type.value
    if source is not None:
        body["source"] = source.value
    if code is not None:
        body["code"] = code
    if detail is not None:
        body["detail"] = detail
    return body


def status_payload(*, ts: str | int, heartbeat_s: int, state: str = "online") -> Payload:
    """The retained JSON status a device sends when it connects."""
    return {"state": state, "ts": ts, "heartbeat_s": heartbeat_s}


# ---------------------------------------------------------------- bad input


class MalformedKind(StrEnum):
    """Each kind of bad input named in contract section 1."""

    BAD_JSON = "bad_json"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_TOPIC = "unknown_topic"
    OVERSIZED = "oversized"
    FUTURE_TIMESTAMP = "future_timestamp"
    NOT_UTF8 = "not_utf8"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_ID = "invalid_id"
    EMPTY = "empty"


# The dead-letter reason hazardwatch should record; the same strings as ingest's reason codes.
EXPECTED_REASON: Final[Mapping[MalformedKind, str]] = {
    MalformedKind.BAD_JSON: "bad_json",
    MalformedKind.WRONG_TYPE: "invalid_field",
    MalformedKind.OUT_OF_RANGE: "invalid_field",
    MalformedKind.UNKNOWN_TOPIC: "unknown_topic",
    MalformedKind.OVERSIZED: "oversized_payload",
    MalformedKind.FUTURE_TIMESTAMP: "future_timestamp",
    MalformedKind.NOT_UTF8: "bad_encoding",
    MalformedKind.NOT_AN_OBJECT: "not_an_object",
    MalformedKind.INVALID_ID: "invalid_id",
    MalformedKind.EMPTY: "empty_payload",
}

_WRONG_TYPES: Final[tuple[tuple[str, object], ...]] = (
    ("seq", "17"),
    ("smoke_db_m", "0.02"),
    ("gas_lel_pct", [2.5]),
    ("alarm", "false"),
    ("alarm", 0),
    ("battery_pct", True),
    ("temperature_c", {"value": 22.5}),
)
_OUT_OF_RANGE: Final[tuple[tuple[str, float | int], ...]] = (
    ("gas_lel_pct", 140.0),
    ("gas_lel_pct", -2.0),
    ("battery_pct", 130),
    ("battery_pct", -4),
    ("smoke_db_m", -0.2),
    ("co_ppm", -3.0),
    ("seq", -1),
)
# Labels a Chinese firmware might send in GBK instead of UTF-8; none of them is valid UTF-8.
_GBK_TEXT: Final = ("烟感报警", "可燃气体泄漏", "电池欠压", "传感器故障")
_BAD_IDS: Final = ("-inst", "inst 001", "inst@001", "机构001", "x" * 65, "", ".hidden")


class _Target(NamedTuple):
    prefix: str
    institution: str
    device: str
    now_ms: int


def _sample_telemetry(rng: random.Random, now_ms: int) -> Payload:
    return telemetry_payload(
        ts=rfc3339_ms(now_ms),
        seq=rng.randrange(100_000),
        kind=DeviceKind.SMOKE,
        readings={"smoke_db_m": 0.02, "temperature_c": 22.5, "battery_pct": 87, "rssi_dbm": -71},
        alarm=False,
        faults=(),
    )


def _device_topic(t: _Target, channel: str = "telemetry") -> str:
    return topic(t.prefix, t.institution, t.device, channel)


def _bad_json(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    text = encode(_sample_telemetry(rng, t.now_ms)).decode()
    variants = (
        text[: rng.randrange(1, len(text) - 1)],  # any proper prefix of an object is unfinished
        text[:-1] + ",}",
        text.replace('"', "'"),
        text[:-1] + ',"co_ppm":NaN}',
    )
    return _device_topic(t), rng.choice(variants).encode()


def _field_swap(rng: random.Random, t: _Target, table: tuple[tuple[str, object], ...]) -> Payload:
    body = _sample_telemetry(rng, t.now_ms)
    name, value = rng.choice(table)
    body[name] = value
    return body


def _wrong_type(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    if rng.random() < 0.2:
        body = event_payload(ts=t.now_ms, seq=1, type=EventType.TEST)
        body["type"] = rng.choice((3, True, ["alarm"]))
        return _device_topic(t, "event"), encode(body)
    return _device_topic(t), encode(_field_swap(rng, t, _WRONG_TYPES))


def _out_of_range(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    return _device_topic(t), encode(_field_swap(rng, t, _OUT_OF_RANGE))


def _unknown_topic(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    base = t.prefix.strip("/")
    shapes = (
        f"{base}/{t.institution}/{t.device}/readings",
        f"{base}/{t.institution}/{t.device}",
        f"{base}/{t.institution}/{t.device}/telemetry/extra",
        f"{base}/{t.device}/telemetry",
    )
    return rng.choice(shapes), encode(_sample_telemetry(rng, t.now_ms))


def _oversized(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    body = _sample_telemetry(rng, t.now_ms)
    body["note"] = "x" * (MAX_PAYLOAD_BYTES + rng.randrange(1, 4096))
    return _device_topic(t), encode(body)


def _future_timestamp(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    ahead_ms = int((MAX_FUTURE_SKEW_S + rng.uniform(60, 48 * 3600)) * 1000)
    body = _sample_telemetry(rng, t.now_ms)
    future = t.now_ms + ahead_ms
    body["ts"] = device_ts(future, rng.choice(("rfc3339", "epoch_ms")))
    return _device_topic(t), encode(body)


def _not_utf8(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    head = encode(
        event_payload(ts=t.now_ms, seq=rng.randrange(1000), type=EventType.FAULT, code="other")
    )
    detail = rng.choice(_GBK_TEXT).encode("gbk")
    return _device_topic(t, "event"), head[:-1] + b',"detail":"' + detail + b'"}'


def _not_an_object(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    sample = _sample_telemetry(rng, t.now_ms)
    variants: tuple[list[object], ...] = ([sample], [0.02, 22.5, 87], [])
    return _device_topic(t), encode(rng.choice(variants))


def _invalid_id(rng: random.Random, t: _Target) -> tuple[str, bytes]:
    bad = rng.choice(_BAD_IDS)
    institution, device = (bad, t.device) if rng.random() < 0.5 else (t.institution, bad)
    return topic(t.prefix, institution, device, "telemetry"), encode(
        _sample_telemetry(rng, t.now_ms)
    )


_MAKERS: Final[Mapping[MalformedKind, Callable[[random.Random, _Target], tuple[str, bytes]]]] = {
    MalformedKind.BAD_JSON: _bad_json,
    MalformedKind.EMPTY: lambda _rng, t: (_device_topic(t), b""),
    MalformedKind.WRONG_TYPE: _wrong_type,
    MalformedKind.OUT_OF_RANGE: _out_of_range,
    MalformedKind.UNKNOWN_TOPIC: _unknown_topic,
    MalformedKind.OVERSIZED: _oversized,
    MalformedKind.FUTURE_TIMESTAMP: _future_timestamp,
    MalformedKind.NOT_UTF8: _not_utf8,
    MalformedKind.NOT_AN_OBJECT: _not_an_object,
    MalformedKind.INVALID_ID: _invalid_id,
}


def malformed_of(
    kind: MalformedKind,
    rng: random.Random,
    *,
    prefix: str = DEFAULT_PREFIX,
    institution: str = "inst-001",
    device: str = "inst-001-smk-001",
    now_ms: int | None = None,
) -> tuple[str, bytes, str]:
    """Bad input of one kind: (full topic, payload, expected dead-letter reason)."""
    when = int(time.time() * 1000) if now_ms is None else now_ms
    full_topic, payload = _MAKERS[kind](rng, _Target(prefix, institution, device, when))
    return full_topic, payload, EXPECTED_REASON[kind]


def malformed_payload(
    rng: random.Random,
    *,
    prefix: str = DEFAULT_PREFIX,
    institution: str = "inst-001",
    device: str = "inst-001-smk-001",
    now_ms: int | None = None,
) -> tuple[str, bytes, str]:
    """Bad input of a random kind: (full topic, payload, expected dead-letter reason)."""
    kind = rng.choice(tuple(MalformedKind))
    return malformed_of(
        kind, rng, prefix=prefix, institution=institution, device=device, now_ms=now_ms
    )

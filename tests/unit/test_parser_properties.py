"""Property tests of the parser and the receive path (issue 14, items 7 and 8).

Whatever arrives on whatever topic, the parser returns a verdict and never raises; a rejection
always carries a reason code and a detail, and the code is the one the input deserves. Valid
messages built at random are accepted with their values unchanged. The example-based tests of
the same rules are in test_parser.py; the examples here are drawn by Hypothesis (the settings
profile in tests/conftest.py makes them the same on every run).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.db import make_engine, session_factory, upgrade
from core.models import (
    EARLIEST_TS,
    ID_PATTERN,
    MAX_FUTURE_SKEW_S,
    MAX_PAYLOAD_BYTES,
    Channel,
    Event,
    EventSource,
    EventType,
    FaultCode,
    Status,
    Telemetry,
)
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from ingest.messages import Accepted, RawMessage, Rejected, Verdict
from ingest.metrics import IngestMetrics
from ingest.parser import DEFAULT_MAX_PAST, DEFAULT_PREFIX, Parser, Reason
from ingest.receiver import Receiver
from ingest.records import decode

RECEIVED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
PREFIX = DEFAULT_PREFIX
ID_RE = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
CHANNELS = tuple(channel.value for channel in Channel)
MODELS: dict[str, type[Telemetry | Event | Status]] = {
    "telemetry": Telemetry,
    "event": Event,
    "status": Status,
}
ALL_REASONS = {value for name, value in vars(Reason).items() if name.isupper()}
# Reasons only the later stages give (registry, store, spool), never the parser.
NOT_THE_PARSERS = {
    Reason.UNKNOWN_DEVICE,
    Reason.INSTITUTION_MISMATCH,
    Reason.STORE_REJECTED,
    Reason.INTERNAL_ERROR,
    Reason.RECORD_TOO_LARGE,
}
PARSER_REASONS = ALL_REASONS - NOT_THE_PARSERS
TOPIC_REASONS = {Reason.UNKNOWN_TOPIC, Reason.INVALID_ID}
# Rejected before the payload is looked at as JSON: what the oracle `early_reason` decides.
EARLY_REASONS = {
    Reason.EMPTY,
    Reason.OVERSIZED,
    Reason.BAD_ENCODING,
    Reason.BAD_JSON,
    Reason.NOT_AN_OBJECT,
}
# Contract section 1: the payload fields. Any other key is ignored.
CONTRACT_KEYS = {
    "ts",
    "seq",
    "kind",
    "smoke_db_m",
    "gas_lel_pct",
    "co_ppm",
    "temperature_c",
    "battery_pct",
    "rssi_dbm",
    "alarm",
    "faults",
    "type",
    "source",
    "code",
    "detail",
    "state",
    "heartbeat_s",
}
# The ranges of contract section 1; None: unbounded.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "smoke_db_m": (0, None),
    "gas_lel_pct": (0, 100),
    "co_ppm": (0, None),
    "temperature_c": (None, None),
    "battery_pct": (0, 100),
    "rssi_dbm": (None, None),
}
MAX_DETAIL = 1024
MAX_HEARTBEAT_S = 7 * 24 * 3600
SKEW = timedelta(seconds=MAX_FUTURE_SKEW_S)
# RFC 3339 `date-time` (section 5.6), with its note's lower-case `t`/`z` and space separator.
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)

# Examples per property, scaled by the profile's max_examples (100 by default, when the file
# runs in about 12 s on a 2-core machine; `pytest --hypothesis-profile=explore` draws 10 times
# as many, and new ones on each run).
_SCALE = settings().max_examples / 100
FEW, SOME, MANY = (round(n * _SCALE) for n in (100, 200, 400))


def device_topic(channel: str, institution: str = "inst-1", device: str = "dev-1") -> str:
    return f"{PREFIX}/{institution}/{device}/{channel}"


def dumps(body: object) -> bytes:
    """JSON as a device might write it: NaN and Infinity come out as the tokens Python uses."""
    return json.dumps(body, allow_nan=True).encode()


# --- the oracles --------------------------------------------------------------------------------


def check_verdict(raw: RawMessage, verdict: Verdict) -> None:
    """What holds of every verdict of the parser, whatever the input."""
    assert verdict.raw is raw
    # How far the examples reach: shown by pytest --hypothesis-show-statistics.
    event(verdict.reason if isinstance(verdict, Rejected) else "accepted")
    if isinstance(verdict, Rejected):
        assert verdict.reason in PARSER_REASONS, verdict
        assert isinstance(verdict.detail, str), verdict
        assert verdict.detail.strip(), verdict
        assert len(verdict.detail) <= 400, verdict  # a reason to read, not the input again
        if verdict.reason in TOPIC_REASONS:
            assert (verdict.institution, verdict.device) == (None, None), verdict
        else:
            # Past the topic: the ids it named are kept with the dead letter.
            assert verdict.institution is not None and verdict.device is not None, verdict
            check_topic_names(raw.topic, verdict.institution, verdict.device)
        return
    assert isinstance(verdict, Accepted), verdict
    message = verdict.message
    channel = check_topic_names(raw.topic, message.institution, message.device)
    assert isinstance(message, MODELS[channel]), (raw.topic, message)
    assert message.ts.utcoffset() == timedelta(0), message
    if message.ts_from_device:
        assert raw.received_at - DEFAULT_MAX_PAST <= message.ts <= raw.received_at + SKEW
        assert message.ts >= EARLIEST_TS
    else:
        assert message.ts == raw.received_at
    if isinstance(message, Telemetry):
        for field, (low, high) in RANGES.items():
            value = getattr(message, field)
            if value is not None:
                assert math.isfinite(value), (field, value)
                assert low is None or value >= low, (field, value)
                assert high is None or value <= high, (field, value)
    if message.seq is not None:
        assert message.seq >= 0


def check_topic_names(topic: str, institution: str, device: str) -> str:
    """A topic of ours names these ids (doubled inner separators aside); its channel."""
    assert ID_RE.fullmatch(institution), (topic, institution)
    assert ID_RE.fullmatch(device), (topic, device)
    assert not topic.startswith("/") and not topic.endswith("/"), topic
    levels = [level for level in topic.split("/") if level]
    assert levels[:-1] == [*PREFIX.split("/"), institution, device], (topic, levels)
    assert levels[-1] in CHANNELS, topic
    return levels[-1]


def topic_reason(topic: str) -> str | None:
    """What is wrong with a topic (docs/ingest.md), or None for a device topic of ours."""
    parts = topic.split("/")
    if "" in parts[1:-1]:
        # A doubled separator inside the topic is read as one when that gives the right depth.
        kept = [parts[0], *(part for part in parts[1:-1] if part), parts[-1]]
        if len(kept) == len(PREFIX.split("/")) + 3:
            parts = kept
    if parts[:-3] != PREFIX.split("/") or parts[-1] not in CHANNELS:
        return Reason.UNKNOWN_TOPIC
    if not (ID_RE.fullmatch(parts[-3]) and ID_RE.fullmatch(parts[-2])):
        return Reason.INVALID_ID
    return None


def early_reason(channel: str, payload: bytes) -> str | None:
    """The reason for a payload that is no JSON object (no status word), or None.

    orjson is the JSON the contract means (RFC 8259, strictly), so it decides what is JSON.
    """
    if not payload:
        return Reason.EMPTY
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reason.OVERSIZED
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Reason.BAD_ENCODING
    if channel == "status" and text.strip() in ("online", "offline"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Reason.BAD_JSON
    return None if isinstance(value, dict) else Reason.NOT_AN_OBJECT


def device_time(value: object) -> datetime | str:
    """What a `ts` value means: an aware time, or BAD_TIMESTAMP (contract section 1)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return Reason.BAD_TIMESTAMP
    if isinstance(value, int):
        try:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
        except OverflowError:
            return Reason.BAD_TIMESTAMP
    match = RFC3339.fullmatch(value)
    if match is None:
        return Reason.BAD_TIMESTAMP
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0)
        if sign is not None:
            if int(off_m) > 59:
                return Reason.BAD_TIMESTAMP
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            offset = -offset if sign == "-" else offset
        micro = int((fraction or "").ljust(6, "0")[:6])  # as fromisoformat: cut, not rounded
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micro,
            tzinfo=timezone(offset),
        )
    except (ValueError, OverflowError):
        return Reason.BAD_TIMESTAMP


def ts_verdict(value: object, received_at: datetime = RECEIVED) -> datetime | str:
    """The time a `ts` gives the message, or the reason it is refused."""
    ts = device_time(value)
    if isinstance(ts, str):
        return ts
    if ts - received_at > SKEW:
        return Reason.FUTURE_TIMESTAMP
    if ts < EARLIEST_TS or ts < received_at - DEFAULT_MAX_PAST:
        return Reason.STALE_TIMESTAMP
    return ts.astimezone(UTC)


# --- strategies: topics -------------------------------------------------------------------------

valid_ids = st.from_regex(ID_RE, fullmatch=True)
# Any character but a lone surrogate: the stage decodes topics with errors="replace"
# (ingest/stage.py), and no JSON string orjson reads holds one.
any_char = st.characters(exclude_categories=["Cs"])
odd_text = st.text(any_char, max_size=80)
# A device's free text: anything but NUL, which PostgreSQL cannot store (invalid_field).
detail_char = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
odd_levels = st.one_of(
    valid_ids,
    odd_text,
    st.sampled_from(["", "+", "#", "inst-1", "dev-1", "\x00", " ", ".", "-a", "_a", "a\n"]),
    st.sampled_from(["ＩＮＳＴ", "ınst", "dev\u200b1", "dev\u202e1", "温度", "a" * 64, "a" * 65]),
    st.sampled_from([*CHANNELS, "Telemetry", "heartbeat", "status\n", "event\x00"]),
    st.integers(1, 5000).map(lambda n: "x" * n),
)


# Ids nearly right: a character more at either end (most may not stand there; some may).
id_edges = st.sampled_from(
    ["\n", "\r\n", "\x00", " ", "\t", "é", "+", "#", ".", "-", "_", "\u200b"]
)
nearly_ids = st.one_of(
    st.tuples(valid_ids, id_edges).map("".join),
    st.tuples(id_edges, valid_ids).map("".join),
)


@st.composite
def near_valid_topics(draw: st.DrawFn) -> str:
    """A device topic with at most one thing wrong with it."""
    levels = [*PREFIX.split("/"), draw(valid_ids), draw(valid_ids), draw(st.sampled_from(CHANNELS))]
    where = draw(st.integers(0, len(levels) - 1))
    how = draw(st.sampled_from(["none", "replace", "insert", "delete", "append", "double"]))
    if how == "replace":
        levels[where] = draw(odd_levels)
    elif how == "insert":
        levels.insert(where, draw(odd_levels))
    elif how == "delete":
        del levels[where]
    elif how == "append":
        levels[where] += draw(st.sampled_from(["\n", "\x00", " ", "/", "//", "é", "+", "#"]))
    elif how == "double":
        levels.insert(where, "")
    topic = "/".join(levels)
    edge = draw(st.sampled_from(["", "", "", "/", "//"]))
    return draw(st.sampled_from([topic, edge + topic, topic + edge]))


any_topics = st.one_of(
    near_valid_topics(),
    odd_text,
    st.lists(odd_levels, max_size=8).map("/".join),
    st.lists(odd_levels, max_size=4).map(lambda levels: "/".join([PREFIX, *levels])),
)


# --- strategies: payloads -----------------------------------------------------------------------


def json_like(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), floats, odd_text)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)
        ),
        max_leaves=12,
    )


# NaN and ±Infinity included, written as the bare tokens (no JSON); then values that are JSON.
json_values = json_like(st.floats())
finite_json_values = json_like(st.floats(allow_nan=False, allow_infinity=False))
# Numbers as devices may spell them, valid JSON or not.
number_tokens = st.sampled_from(
    [
        "1e400",
        "-1e400",
        "1e-400",
        "-0",
        "-0.0",
        "0e0",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "1" * 400,
        "-" + "9" * 30,
        "18446744073709551616",
        "0x10",
        "01",
        "1.",
        ".5",
        "+1",
        "1_000",
        "1e",
        "true",
        "null",
        '"12"',
    ]
)
# Always invalid in UTF-8, wherever they stand.
bad_utf8 = st.sampled_from(
    [b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88"]
)


@st.composite
def token_payloads(draw: st.DrawFn) -> bytes:
    key = draw(st.sampled_from(sorted(CONTRACT_KEYS)))
    return f'{{"{key}": {draw(number_tokens)}}}'.encode()


@st.composite
def with_bad_utf8(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    body = draw(base)
    at = draw(st.integers(0, len(body)))
    return body[:at] + draw(bad_utf8) + body[at:]


def nested(n: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * n + b"]" * n
    return b'{"a":' * n + b"1" + b"}" * n


deep_payloads = st.builds(nested, st.integers(1, 5000), st.sampled_from(["list", "dict"]))
oversized_payloads = st.builds(
    lambda n, fill: b'{"detail": "' + fill * n + b'"}',
    st.integers(MAX_PAYLOAD_BYTES - 15, MAX_PAYLOAD_BYTES + 2000),
    st.sampled_from([b"x", b"\xff", b" "]),
)
plain_status = st.builds(
    lambda word, before, after: (before + word + after).encode(),
    st.sampled_from(["online", "offline", "ONLINE", "Online", "on line", "online?"]),
    st.sampled_from(["", " ", "\t", "\n", "\u3000", "\x00", "\ufeff"]),
    st.sampled_from(["", " ", "\r\n", "\n\n", "\x00", "\u00a0"]),
)
any_payloads = st.one_of(
    st.binary(max_size=300),
    odd_text.map(str.encode),
    json_values.map(dumps),
    st.dictionaries(st.sampled_from(sorted(CONTRACT_KEYS)), json_values, max_size=5).map(dumps),
    token_payloads(),
    with_bad_utf8(json_values.map(dumps)),
    deep_payloads,
    oversized_payloads,
    plain_status,
)


# --- strategies: valid messages, and one thing changed --------------------------------------


def finite(low: float | None, high: float | None) -> st.SearchStrategy[float | int]:
    return st.one_of(
        st.floats(low, high, allow_nan=False, allow_infinity=False),
        st.integers(
            int(low) if low is not None else -(10**30), int(high) if high is not None else 10**30
        ),
    )


def rfc3339(moment: datetime, digits: int, zulu: bool) -> str:
    """A time as RFC 3339 with its own offset (`Z` for UTC if `zulu`), `digits` of fraction."""
    offset = moment.utcoffset() or timedelta(0)
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"  # %Y gives no leading zeros: "1-01-01"
    if digits:
        text += "." + f"{moment.microsecond:06d}".ljust(digits, "0")[:digits]
    if zulu and not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return text + f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@st.composite
def rfc3339_strings(draw: st.DrawFn, low: datetime, high: datetime) -> str:
    """Times between `low` and `high` (UTC) written with any offset and fraction."""
    moment = draw(st.datetimes(low.replace(tzinfo=None), high.replace(tzinfo=None)))
    local = moment.replace(tzinfo=UTC).astimezone(draw(offsets))
    return rfc3339(local, draw(st.sampled_from([0, 0, 1, 3, 3, 6, 9])), draw(st.booleans()))


def epoch_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# Device times the parser takes: received within 30 days before, up to 5 minutes after.
good_ts = st.one_of(
    rfc3339_strings(RECEIVED - DEFAULT_MAX_PAST, RECEIVED + SKEW),
    st.integers(epoch_ms(RECEIVED - DEFAULT_MAX_PAST), epoch_ms(RECEIVED + SKEW)),
)


@st.composite
def mangled_ts(draw: st.DrawFn) -> str:
    """A good RFC 3339 time with one character put in, taken out or changed."""
    text = draw(rfc3339_strings(RECEIVED - timedelta(days=3), RECEIVED))
    at = draw(st.integers(0, len(text)))
    char = draw(
        st.one_of(
            st.sampled_from(["\x00", " ", "T", "t", "Z", "z", "x", "+", "-", ":", ".", ",", "W"]),
            st.sampled_from(["0", "9", "\n", "\u0660", "\uff10", "Z\x00junk", "\x00Z"]),
            any_char,
        )
    )
    how = draw(st.sampled_from(["insert", "replace", "delete", "cut"]))
    if how == "insert":
        return text[:at] + char + text[at:]
    if how == "replace":
        return text[:at] + char + text[at + 1 :]
    if how == "delete":
        return text[:at] + text[at + 1 :]
    return text[:at]


# Any `ts` at all: good ones, any time of the calendar, any epoch ms, and things that are no time.
any_ts = st.one_of(
    good_ts,
    rfc3339_strings(datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)),
    st.sampled_from(
        [
            "1970-01-01T00:00:00Z",
            "2019-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
            "2026-11-22T08:05:00Z",
            "2026-11-22T08:05:00.001Z",
            "2026-11-22T08:00:00-00:00",
            "2026-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T08:00:60Z",
            "2026-11-22T08:00:00+24:00",
            "2026-11-22T08:00:00+05:60",
            "2026-11-22T08:00:00",
            "2026-11-22",
            "2026-11-22T08:00:00.Z",
            "20261122T080000Z",
            "2026-W47-7T08:00:00Z",
            "2026-11-22T08Z",
            "2026-11-22T08:00:00+0800",
            "2026-11-22T08:00:00,5Z",
            "2026-11-22t08:00:00z",
            "2026-11-22 08:00:00Z",
            "",
            "now",
        ]
    ),
    mangled_ts(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(-(10**5), 10**5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    odd_text,
    st.lists(st.integers(), max_size=2),
    st.just({"ms": 1}),
)


@st.composite
def valid_telemetry(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "ts": good_ts,
        "seq": st.integers(0, 2**64 - 1),
        "kind": st.sampled_from(["smoke", "gas", "co", "multi"]),
        "alarm": st.booleans(),
        "faults": st.lists(st.sampled_from([code.value for code in FaultCode]), max_size=4),
        **{field: finite(low, high) for field, (low, high) in RANGES.items()},
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            body[key] = draw(values)
    return body


@st.composite
def valid_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([t.value for t in EventType]))
    body: dict[str, Any] = {"type": kind}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "ts": good_ts,
        "seq": st.integers(0, 2**64 - 1),
        "source": st.sampled_from([s.value for s in EventSource]),
        "code": st.sampled_from([c.value for c in FaultCode]),
        "detail": st.one_of(
            st.text(detail_char, max_size=80),
            # Up to the limit, cheaply: 1,024 characters drawn one by one cost 10 ms an example.
            st.builds(
                str.__mul__,
                detail_char,
                st.integers(MAX_DETAIL - 24, MAX_DETAIL),
            ),
        ),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            body[key] = draw(values)
    if kind in ("fault", "fault_clear") and "code" not in body:
        body["code"] = draw(optional["code"])
    return body


@st.composite
def valid_status(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"state": draw(st.sampled_from(["online", "offline"]))}
    if draw(st.booleans()):
        body["ts"] = draw(good_ts)
    if draw(st.booleans()):
        body["heartbeat_s"] = draw(st.integers(1, MAX_HEARTBEAT_S))
    return body


VALID = {"telemetry": valid_telemetry(), "event": valid_event(), "status": valid_status()}
valid_messages = st.sampled_from(CHANNELS).flatmap(
    lambda channel: st.tuples(st.just(channel), VALID[channel])
)

# Values of the wrong JSON type for each kind of field: strict, "12" is no number, 1 no `true`.
not_a_number = st.one_of(
    st.booleans(), odd_text, st.lists(st.integers(), max_size=2), st.just({"value": 1})
)
not_a_flag = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), odd_text, st.just([True])
)
not_a_counter = st.one_of(
    st.booleans(),
    st.integers(max_value=-1),
    st.integers(2**64, 2**200),  # orjson reads it as a float
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)


def out_of_range(field: str) -> st.SearchStrategy[float | int]:
    low, high = RANGES[field]
    choices: list[st.SearchStrategy[float | int]] = []
    if low is not None:  # -0.0 is not below 0
        below = st.floats(max_value=low, allow_nan=False, allow_infinity=False)
        choices += [below.filter(lambda value: value < low), st.integers(max_value=int(low) - 1)]
    if high is not None:
        above = st.floats(min_value=high, exclude_min=True, allow_infinity=False)
        choices += [above, st.integers(min_value=int(high) + 1, max_value=2**64)]
    return st.one_of(*choices)


def unknown_word(known: set[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        odd_text, st.sampled_from(["GAS", "Smoke", "fire", " alarm", "alarm "])
    ).filter(lambda word: word not in known)


EVENT_TYPES = {t.value for t in EventType}
SOURCES = {s.value for s in EventSource}
FAULT_CODES = {c.value for c in FaultCode}
KINDS = {"smoke", "gas", "co", "multi"}


@st.composite
def one_field_wrong(draw: st.DrawFn) -> tuple[str, dict[str, Any], str, str]:
    """A valid message with one field of the wrong type or out of range: channel, body, the
    field, and the reason."""
    channel, body = draw(valid_messages)
    value: Any
    if channel == "telemetry":
        field = draw(st.sampled_from([*RANGES, "seq", "alarm", "kind", "faults"]))
        if field in RANGES:
            value = draw(st.one_of(not_a_number, out_of_range(field)))
        elif field == "seq":
            value = draw(not_a_counter)
        elif field == "alarm":
            value = draw(not_a_flag)
        elif field == "kind":
            value = draw(st.one_of(unknown_word(KINDS), st.integers(), st.just(["gas"])))
        else:
            value = draw(
                st.one_of(
                    st.sampled_from(sorted(FAULT_CODES)),  # one code, not an array of them
                    st.lists(unknown_word(FAULT_CODES), min_size=1, max_size=2),
                    st.lists(st.integers(), min_size=1, max_size=2),
                )
            )
    elif channel == "event":
        field = draw(st.sampled_from(["type", "source", "code", "detail", "seq"]))
        if field == "type":
            value = draw(st.one_of(unknown_word(EVENT_TYPES), st.integers(), st.none()))
        elif field == "source":
            value = draw(st.one_of(unknown_word(SOURCES), st.integers()))
        elif field == "code":
            value = draw(st.one_of(unknown_word(FAULT_CODES), st.integers()))
        elif field == "detail":
            value = draw(
                st.one_of(
                    st.integers(),
                    st.booleans(),
                    st.integers(MAX_DETAIL + 1, MAX_DETAIL + 100).map(lambda n: "é" * n),
                    st.tuples(odd_text, odd_text).map(lambda pair: f"{pair[0]}\x00{pair[1]}"),
                )
            )
        else:
            value = draw(not_a_counter)
    else:
        field = draw(st.sampled_from(["heartbeat_s", "state"]))
        if field == "state":
            value = draw(
                st.one_of(unknown_word({"online", "offline"}), finite_json_values).filter(
                    lambda state: state not in ("online", "offline")
                )
            )
            body[field] = value
            return channel, body, field, Reason.BAD_STATUS
        value = draw(
            st.one_of(
                st.integers(max_value=0),
                st.integers(min_value=MAX_HEARTBEAT_S + 1),
                not_a_number,
                st.floats(1, MAX_HEARTBEAT_S),
            )
        )
    body[field] = value
    return channel, body, field, Reason.INVALID_FIELD


unknown_keys = st.one_of(
    odd_text,
    # Names of the models' own attributes, which no device sets: the topic and receipt do.
    st.sampled_from(["channel", "institution", "device", "ts_from_device", "retained", "online"]),
    st.sampled_from(["firmware", "TS", "Seq", "ts ", "type\x00", "温度"]),
).filter(lambda key: key not in CONTRACT_KEYS)


# --- properties: anything at all ----------------------------------------------------------------


@settings(max_examples=MANY, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=st.one_of(st.sampled_from(CHANNELS).map(device_topic), near_valid_topics(), any_topics),
    payload=any_payloads,
    retained=st.booleans(),
)
def test_any_topic_and_payload_get_a_verdict_and_a_rejection_a_reason(
    topic: str, payload: bytes, retained: bool
) -> None:
    raw = RawMessage(topic, payload, RECEIVED, retained=retained)
    verdict = Parser().parse(raw)  # must not raise
    check_verdict(raw, verdict)
    expected = topic_reason(topic) or early_reason(topic.rsplit("/", 1)[-1], payload)
    if expected is not None:
        assert isinstance(verdict, Rejected) and verdict.reason == expected, (expected, verdict)


@settings(max_examples=SOME)
@given(topic=near_valid_topics())
def test_a_topic_is_accepted_only_when_it_names_a_channel_and_two_valid_ids(topic: str) -> None:
    raw = RawMessage(topic, b'{"type": "test", "state": "online"}', RECEIVED)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    expected = topic_reason(topic)
    if expected is None:
        assert isinstance(verdict, Accepted), verdict
    else:
        assert isinstance(verdict, Rejected) and verdict.reason == expected, (expected, verdict)


@settings(max_examples=MANY, suppress_health_check=[HealthCheck.too_slow])
@given(channel=st.sampled_from(CHANNELS), payload=any_payloads)
def test_a_payload_that_is_no_json_object_gets_the_reason_for_what_is_wrong(
    channel: str, payload: bytes
) -> None:
    raw = RawMessage(device_topic(channel), payload, RECEIVED)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    expected = early_reason(channel, payload)
    if expected is not None:
        assert isinstance(verdict, Rejected), (expected, verdict)
        assert verdict.reason == expected, verdict
        assert (verdict.institution, verdict.device) == ("inst-1", "dev-1")
    else:
        # A JSON object (or a status word): whatever is wrong with it lies further in.
        assert not (isinstance(verdict, Rejected) and verdict.reason in EARLY_REASONS), verdict


# --- properties: timestamps ---------------------------------------------------------------------


@settings(max_examples=MANY)
@given(channel=st.sampled_from(CHANNELS), ts=any_ts)
def test_any_ts_gives_the_time_it_means_or_the_reason_it_is_refused(
    channel: str, ts: object
) -> None:
    body: dict[str, Any] = {"type": "test", "state": "online", "ts": ts}
    raw = RawMessage(device_topic(channel), dumps(body), RECEIVED)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    expected = ts_verdict(ts)
    if isinstance(expected, str):
        assert isinstance(verdict, Rejected), (ts, expected, verdict)
        assert verdict.reason == expected, (ts, verdict)
        if expected != Reason.BAD_TIMESTAMP:  # the detail says which time and which bound
            assert verdict.detail.startswith("ts "), verdict
    else:
        assert isinstance(verdict, Accepted), (ts, verdict)
        assert verdict.message.ts == expected, (ts, verdict.message.ts)
        assert verdict.message.ts_from_device


@settings(max_examples=SOME)
@given(received=st.datetimes(datetime(2020, 2, 1), datetime(2200, 1, 1)), data=st.data())
def test_the_time_limits_count_from_the_receive_time(
    received: datetime, data: st.DataObject
) -> None:
    received = received.replace(tzinfo=UTC)
    ts_ms = epoch_ms(received) + data.draw(
        st.integers(-(DEFAULT_MAX_PAST // timedelta(milliseconds=1)) - 5, 300_005),
        label="ms after receipt",
    )
    raw = RawMessage(device_topic("telemetry"), dumps({"ts": ts_ms}), received)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    expected = ts_verdict(ts_ms, received)
    if isinstance(expected, str):
        assert isinstance(verdict, Rejected) and verdict.reason == expected, verdict
    else:
        assert isinstance(verdict, Accepted), verdict
        assert verdict.message.ts == expected


# --- properties: near-valid payloads ------------------------------------------------------------


@settings(max_examples=MANY)
@given(case=one_field_wrong())
def test_a_valid_message_with_one_field_wrong_is_rejected_naming_the_field(
    case: tuple[str, dict[str, Any], str, str],
) -> None:
    channel, body, field, expected = case
    raw = RawMessage(device_topic(channel), dumps(body), RECEIVED)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    assert isinstance(verdict, Rejected), (body, verdict)
    assert verdict.reason == expected, (body, verdict)
    assert field in verdict.detail, (body, verdict)


@settings(max_examples=SOME)
@given(message=valid_messages, extra=st.dictionaries(unknown_keys, finite_json_values, max_size=3))
def test_keys_outside_the_contract_are_ignored(
    message: tuple[str, dict[str, Any]], extra: dict[str, Any]
) -> None:
    channel, body = message
    plain = Parser().parse(RawMessage(device_topic(channel), dumps(body), RECEIVED))
    raw = RawMessage(device_topic(channel), dumps({**extra, **body}), RECEIVED)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    assert isinstance(plain, Accepted)
    assert isinstance(verdict, Accepted), (extra, verdict)
    assert verdict.message == plain.message


# --- properties: valid messages come through unchanged ------------------------------------------


def expect_values(body: dict[str, Any], message: Telemetry | Event | Status) -> None:
    """Every value sent is the message's value, as its type."""
    if "ts" in body:
        assert message.ts == ts_verdict(body["ts"])
        assert message.ts_from_device
    else:
        assert message.ts == RECEIVED
        assert not message.ts_from_device
    if isinstance(message, Status):
        assert message.online is (body["state"] == "online")
        assert message.heartbeat_s == body.get("heartbeat_s")
        return
    assert message.seq == body.get("seq")
    if isinstance(message, Telemetry):
        for field in RANGES:
            sent, got = body.get(field), getattr(message, field)
            if sent is None:
                assert got is None
            else:
                assert type(got) is float and got == float(sent), (field, sent, got)
                assert math.copysign(1, got) == math.copysign(1, sent), (field, sent, got)
        assert message.alarm == body.get("alarm")
        assert (message.kind and message.kind.value) == body.get("kind")
        faults = body.get("faults")
        assert message.faults == (None if faults is None else tuple(FaultCode(f) for f in faults))
        return
    assert message.type.value == body["type"]
    assert (message.source and message.source.value) == body.get("source")
    assert (message.code and message.code.value) == body.get("code")
    assert message.detail == body.get("detail")


@settings(max_examples=MANY)
@given(
    message=valid_messages,
    institution=valid_ids,
    device=valid_ids,
    ascii_only=st.booleans(),
    retained=st.booleans(),
)
def test_every_valid_message_is_accepted_with_its_values_unchanged(
    message: tuple[str, dict[str, Any]],
    institution: str,
    device: str,
    ascii_only: bool,
    retained: bool,
) -> None:
    channel, body = message
    payload = json.dumps(body, ensure_ascii=ascii_only).encode()
    raw = RawMessage(device_topic(channel, institution, device), payload, RECEIVED, retained)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    assert isinstance(verdict, Accepted), (body, verdict)
    got = verdict.message
    assert (got.institution, got.device) == (institution, device)
    expect_values(body, got)
    if isinstance(got, Status):
        assert got.retained is retained


@settings(max_examples=FEW)
@given(payload=plain_status, retained=st.booleans())
def test_a_plain_status_word_is_accepted_whatever_whitespace_surrounds_it(
    payload: bytes, retained: bool
) -> None:
    raw = RawMessage(device_topic("status"), payload, RECEIVED, retained=retained)
    verdict = Parser().parse(raw)
    check_verdict(raw, verdict)
    word = payload.decode().strip()
    if word in ("online", "offline"):
        assert isinstance(verdict, Accepted), verdict
        assert isinstance(verdict.message, Status)
        assert verdict.message.online is (word == "online")
        assert (verdict.message.ts, verdict.message.retained) == (RECEIVED, retained)
    else:
        assert isinstance(verdict, Rejected) and verdict.reason == Reason.BAD_JSON, verdict


# --- the receive path ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def make_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Receiver]]:
    """A fresh receiver on one registry (auto-registration on) for the module: migrating a
    database per example would cost most of the test's time."""
    path: Path = tmp_path_factory.mktemp("registry") / "registry.sqlite"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)

    def make() -> Receiver:
        directory = DeviceDirectory(RegistryRepository(session_factory(engine)), auto_register=True)
        directory.load()
        return Receiver(Parser(), directory, IngestMetrics())

    yield make
    engine.dispose()


@st.composite
def valid_payloads_on_near_valid_topics(draw: st.DrawFn) -> tuple[str, bytes]:
    """What reaches registry admission most: a valid payload, and a topic nearly right."""
    topic = draw(
        st.one_of(
            near_valid_topics(),
            st.builds(
                device_topic,
                st.sampled_from(CHANNELS),
                st.one_of(valid_ids, nearly_ids),
                st.one_of(valid_ids, nearly_ids),
            ),
        )
    )
    channel = topic.rsplit("/", 1)[-1]
    return topic, dumps(draw(VALID.get(channel, valid_telemetry())))


inputs = st.one_of(
    valid_payloads_on_near_valid_topics(),
    st.tuples(any_topics, any_payloads),
    st.tuples(st.sampled_from(CHANNELS).map(device_topic), any_payloads),
    valid_messages.map(lambda m: (device_topic(m[0]), dumps(m[1]))),
    one_field_wrong().map(lambda case: (device_topic(case[0]), dumps(case[1]))),
    # One device id under two institutions: the second is refused (institution_mismatch).
    st.tuples(
        st.sampled_from(["inst-1", "inst-2"]).map(
            lambda inst: device_topic("status", inst, "dev-9")
        ),
        st.just(b"online"),
    ),
)


@settings(max_examples=SOME, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(inputs, st.booleans(), st.booleans()), min_size=1, max_size=8))
def test_the_receiver_never_raises_and_every_dead_letter_has_a_reason(
    make_receiver: Callable[[], Receiver],
    messages: list[tuple[tuple[str, bytes], bool, bool]],
) -> None:
    receiver = make_receiver()
    for n, ((topic, payload), dup, retained) in enumerate(messages, start=1):
        raw = RawMessage(topic, payload, RECEIVED + timedelta(milliseconds=n), retained, dup, lsn=n)
        outcome = receiver.handle(raw, n)  # must not raise
        if outcome is None:  # a duplicate: only ever a message like one before it
            assert n > 1
            continue
        record, letter = outcome
        stored = decode(record)
        assert stored.raw_lsn == n
        assert stored.dead_letter == letter
        if letter is None:
            assert isinstance(Parser().parse(raw), Accepted)
            continue
        assert letter.reason in ALL_REASONS - {Reason.INTERNAL_ERROR}, letter
        assert letter.detail.strip(), letter
        assert letter.topic == topic[:1024]
        assert letter.payload == payload[:MAX_PAYLOAD_BYTES]
        assert letter.size == len(payload)
        verdict = Parser().parse(raw)
        if isinstance(verdict, Rejected):
            assert letter.reason == verdict.reason
        else:  # valid, but the registry refused it
            assert letter.reason == Reason.INSTITUTION_MISMATCH, letter

"""The one place where topic + bytes become typed messages or a reasoned rejection."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from core.models import (
    EARLIEST_TS,
    ID_PATTERN,
    ID_RE,
    MAX_FUTURE_SKEW_S,
    MAX_PAYLOAD_BYTES,
    Channel,
    Event,
    Status,
    Telemetry,
)
from ingest.messages import Accepted, RawMessage, Rejected, Verdict

DEFAULT_PREFIX = "hazardwatch/v1"
# Devices buffer readings while offline and send them later; older than this is a clock fault.
DEFAULT_MAX_PAST = timedelta(days=30)
# Valid topics seen recently. Small on purpose: it pays for fleets of a few thousand devices
# (a hit costs 0.07 µs, a fresh split 0.7 µs); with a large fleet's round-robin traffic no
# cache short of the whole fleet hits, and 300,000 topics held 800 bytes per device of 100,000.
TOPIC_CACHE_MAX = 8192
_ID = ID_PATTERN.removeprefix("^").removesuffix("$")
_CHANNELS = {channel.value: channel for channel in Channel}
# RFC 3339 date-time (section 5.6; "t", "z" and a space separator as its notes allow), the
# offset left optional here so that its absence gets a reason of its own. fromisoformat alone
# reads far more: ISO 8601 week dates and basic format, "+0800", "+05:99" (as +06:39), and on
# Python 3.11 anything at all after a NUL.
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)?",
    re.ASCII,
)


class Reason:
    """Dead-letter reason codes, stable: operators filter and count by them."""

    EMPTY = "empty_payload"
    OVERSIZED = "oversized_payload"
    BAD_ENCODING = "bad_encoding"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TOPIC = "unknown_topic"
    INVALID_ID = "invalid_id"
    INVALID_FIELD = "invalid_field"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_STATUS = "bad_status"
    UNKNOWN_DEVICE = "unknown_device"
    INSTITUTION_MISMATCH = "institution_mismatch"
    STORE_REJECTED = "store_rejected"
    INTERNAL_ERROR = "internal_error"  # a bug in hazardwatch; the message is kept
    RECORD_TOO_LARGE = "record_too_large"  # a spool record its reader cannot take


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Parser:
    """Turns a `RawMessage` into an `Accepted` or a `Rejected`; never raises."""

    def __init__(
        self, prefix: str = DEFAULT_PREFIX, max_past: timedelta = DEFAULT_MAX_PAST
    ) -> None:
        """`max_past`: how much older than its receive time a device's `ts` may be."""
        self._max_past = max_past
        self._prefix_parts = prefix.strip("/").split("/")
        self._n = len(self._prefix_parts)
        self._topics: dict[str, tuple[str, str, Channel]] = {}
        # Every well-formed topic in one match; the others go the long way, to say what is wrong.
        self._well_formed = re.compile(
            re.escape("/".join(self._prefix_parts)) + f"/({_ID})/({_ID})/(telemetry|event|status)"
        )

    @property
    def subscriptions(self) -> list[str]:
        """One filter for the whole tree, so that malformed topics reach the dead letters too."""
        return ["/".join(self._prefix_parts) + "/#"]

    def parse(self, raw: RawMessage) -> Verdict:
        """Validate one message against contract section 1."""
        ids: tuple[str, str] | None = None
        try:
            institution, device, channel = self._split_topic(raw.topic)
            ids = (institution, device)
            message = self._decode(raw, institution, device, channel)
        except _Bad as bad:
            institution_id, device_id = ids if ids else (None, None)
            return Rejected(bad.reason, bad.detail, raw, institution_id, device_id)
        return Accepted(message, raw)

    def _split_topic(self, topic: str) -> tuple[str, str, Channel]:
        known = self._topics.get(topic)
        if known is not None:
            return known
        if match := self._well_formed.fullmatch(topic):
            institution, device, channel = match.groups()
            split = (institution, device, _CHANNELS[channel])
        else:
            split = self._split_new_topic(topic)
        if len(self._topics) >= TOPIC_CACHE_MAX:
            self._topics.clear()
        self._topics[topic] = split
        return split

    def _split_new_topic(self, topic: str) -> tuple[str, str, Channel]:
        parts = topic.split("/")
        if "" in parts[1:-1]:
            # A doubled separator inside the topic ("…/inst-1//dev-1/…"), as firmware that
            # joins levels by hand sends: no level of ours may be empty (contract section 1), so
            # when the topic has the right depth without it, that is the topic meant. Otherwise
            # it is an id left empty (invalid_id); leading and trailing ones stay unknown.
            kept = [parts[0], *(part for part in parts[1:-1] if part), parts[-1]]
            if len(kept) == self._n + 3:
                parts = kept
        if len(parts) != self._n + 3 or parts[: self._n] != self._prefix_parts:
            raise _Bad(Reason.UNKNOWN_TOPIC, f"not {'/'.join(self._prefix_parts)}/+/+/<channel>")
        institution, device, channel = parts[self._n :]
        try:
            kind = Channel(channel)
        except ValueError:
            raise _Bad(Reason.UNKNOWN_TOPIC, f"unknown channel {channel[:32]!r}") from None
        for name, value in (("institution", institution), ("device", device)):
            if not ID_RE.fullmatch(value):  # `$` would let a final "\n" through
                raise _Bad(Reason.INVALID_ID, f"{name} id {value[:70]!r} is not a valid id")
        return institution, device, kind

    def _decode(
        self, raw: RawMessage, institution: str, device: str, channel: Channel
    ) -> Telemetry | Event | Status:
        if not raw.payload:
            # Also what clearing a retained status looks like: still not a device message.
            raise _Bad(Reason.EMPTY, "empty payload")
        if len(raw.payload) > MAX_PAYLOAD_BYTES:
            size = raw.size if raw.size is not None else len(raw.payload)  # the edge cut it
            raise _Bad(Reason.OVERSIZED, f"{size} bytes > {MAX_PAYLOAD_BYTES}")
        try:
            text = raw.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Bad(
                Reason.BAD_ENCODING, f"not UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
        if channel is Channel.STATUS:
            return self._status(raw, text, institution, device)
        body = _load_object(text)
        ts, from_device = self._timestamp(body.pop("ts", None), raw.received_at)
        # The topic and the receipt set these; a key of the same name in the payload is ignored.
        body.update(
            institution=institution,
            device=device,
            ts=ts,
            ts_from_device=from_device,
            channel=channel,
        )
        model = Telemetry if channel is Channel.TELEMETRY else Event
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise _Bad(Reason.INVALID_FIELD, _first_error(exc)) from None

    def _status(self, raw: RawMessage, text: str, institution: str, device: str) -> Status:
        common = {"institution": institution, "device": device, "retained": raw.retained}
        plain = text.strip()
        if plain in ("online", "offline"):
            return Status(ts=raw.received_at, online=plain == "online", **common)
        body = _load_object(text)
        state = body.get("state")
        if state not in ("online", "offline"):
            raise _Bad(Reason.BAD_STATUS, "state must be 'online' or 'offline'")
        ts, from_device = self._timestamp(body.get("ts"), raw.received_at)
        try:
            return Status(
                ts=ts,
                ts_from_device=from_device,
                online=state == "online",
                heartbeat_s=body.get("heartbeat_s"),
                **common,
            )
        except ValidationError as exc:
            raise _Bad(Reason.INVALID_FIELD, _first_error(exc)) from None

    def _timestamp(self, value: object, received_at: datetime) -> tuple[datetime, bool]:
        """The device time (RFC 3339 or epoch ms), or the receive time when absent."""
        if value is None:
            return received_at, False
        ts = _read_timestamp(value)
        if ts - received_at > _FUTURE_SKEW:
            raise _Bad(Reason.FUTURE_TIMESTAMP, f"ts {ts.isoformat()} is more than 5 min ahead")
        if ts < EARLIEST_TS:
            raise _Bad(
                Reason.STALE_TIMESTAMP,
                f"ts {ts.isoformat()} is before {EARLIEST_TS.isoformat()}: the device clock is "
                "not set",
            )
        bound = received_at - self._max_past
        if ts < bound:
            raise _Bad(
                Reason.STALE_TIMESTAMP,
                f"ts {ts.isoformat()} is before {bound.isoformat()}, "
                f"{_span(self._max_past)} before the receive time",
            )
        return ts.astimezone(UTC), True


_FUTURE_SKEW = timedelta(seconds=MAX_FUTURE_SKEW_S)  # made once: this runs for every message


def _read_timestamp(value: object) -> datetime:
    """An RFC 3339 string or integer epoch milliseconds, with its UTC offset."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Bad(Reason.BAD_TIMESTAMP, "ts must be an RFC 3339 string or integer epoch ms")
    try:
        if isinstance(value, int):
            ts = datetime.fromtimestamp(value / 1000, UTC)
        elif _RFC3339.fullmatch(value):
            ts = datetime.fromisoformat(value.upper())  # 3.11 reads no lower-case "z"
        else:
            raise _Bad(Reason.BAD_TIMESTAMP, f"ts {value[:64]!r} is not an RFC 3339 date-time")
    except (ValueError, OverflowError, OSError) as exc:
        raise _Bad(Reason.BAD_TIMESTAMP, f"unreadable ts: {exc}"[:200]) from None
    if ts.tzinfo is None:
        raise _Bad(Reason.BAD_TIMESTAMP, "ts has no UTC offset (RFC 3339 requires one)")
    return ts


def _span(span: timedelta) -> str:
    """A limit as people write it: "30 days", or the timedelta's own form."""
    if span.days and span == timedelta(days=span.days):
        return f"{span.days} days" if span.days != 1 else "1 day"
    return str(span)


def _load_object(text: str) -> dict[str, Any]:
    # orjson is strict RFC 8259: NaN and Infinity, which json.loads accepts, are refused.
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Bad(Reason.BAD_JSON, f"not JSON: {exc}"[:200]) from None
    if not isinstance(body, dict):
        raise _Bad(Reason.NOT_AN_OBJECT, f"payload is a JSON {type(body).__name__}, not an object")
    return body


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "payload"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"[:300]

"""Device messages as time-series points (contract section 2)."""

from __future__ import annotations

from core.clock import to_epoch_ms
from core.models import MEASUREMENT_FIELDS, DeviceMessage, Event, Status, Telemetry
from core.points import FieldValue, Point


def to_points(message: DeviceMessage, kind: str | None) -> list[Point]:
    """The points one message becomes; `kind` is the registry's, which wins on conflict."""
    if isinstance(message, Telemetry):
        return _reading(message, kind)
    if isinstance(message, Event):
        return [_event(message)]
    return [_status(message)]


def _reading(message: Telemetry, kind: str | None) -> list[Point]:
    fields: dict[str, FieldValue] = {}
    for name in MEASUREMENT_FIELDS:
        value = getattr(message, name)
        if value is not None:
            fields[name] = float(value)
    if message.alarm is not None:
        fields["alarm"] = message.alarm
    if message.seq is not None:
        fields["seq"] = message.seq
    if not fields:
        # A bare heartbeat carries nothing to store; it still counts as seen.
        return []
    tags = {
        "institution": message.institution,
        "device": message.device,
        "kind": kind or (message.kind.value if message.kind else "unknown"),
    }
    return [Point("reading", tags, fields, to_epoch_ms(message.ts))]


def _event(message: Event) -> Point:
    fields: dict[str, FieldValue] = {}
    if message.source is not None:
        fields["source"] = message.source.value
    if message.code is not None:
        fields["code"] = message.code.value
    if message.detail is not None:
        fields["detail"] = message.detail
    if message.seq is not None:
        fields["seq"] = message.seq
    if not fields:
        fields["detail"] = ""
    tags = {"institution": message.institution, "device": message.device, "type": message.type}
    return Point("device_event", tags, fields, to_epoch_ms(message.ts))


def _status(message: Status) -> Point:
    tags = {"institution": message.institution, "device": message.device}
    fields: dict[str, FieldValue] = {"online": message.online, "reason": "reported"}
    return Point("device_status", tags, fields, to_epoch_ms(message.ts))

"""What one spool record holds, and its JSON encoding.

Each MQTT message becomes one record: its points (accepted) or a dead letter (rejected),
plus the device and payload digest that let a restarted service recognise redeliveries.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson

from core.clock import to_epoch_ms
from core.models import MAX_PAYLOAD_BYTES
from core.points import Point
from ingest.dedupe import MessageId
from ingest.messages import Rejected


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message as it is kept and listed."""

    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    size: int
    institution: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """The decoded content of a record."""

    key: str
    digest: int
    points: list[Point]
    dead_letter: DeadLetter | None
    received_ms: int
    raw_lsn: int = 0  # where the message is in the raw spool (0: before there was one)
    message_id: MessageId | None = None  # seq, device ts, power_on: primes the duplicate check


def dead_letter_of(rejected: Rejected) -> DeadLetter:
    """The dead letter for a rejection; the payload is cut at 16 KiB (contract section 1)."""
    raw = rejected.raw
    return DeadLetter(
        received_ms=to_epoch_ms(raw.received_at),
        topic=raw.topic[:1024],
        reason=rejected.reason,
        detail=rejected.detail,
        payload=raw.payload[:MAX_PAYLOAD_BYTES],
        size=raw.size if raw.size is not None else len(raw.payload),
        institution=rejected.institution,
        device=rejected.device,
    )


def encode_points(
    key: str,
    digest: int,
    received_ms: int,
    points: list[Point],
    raw_lsn: int = 0,
    message_id: MessageId | None = None,
) -> bytes:
    """A record for an accepted message."""
    body: dict[str, object] = {
        "k": key,
        "h": digest,
        "r": received_ms,
        "l": raw_lsn,
        "p": [p.to_wire() for p in points],
    }
    if message_id is not None:
        body["q"] = [message_id.seq, message_id.ts_ms, message_id.power_on]
    return orjson.dumps(body)


def encode_dead_letter(key: str, digest: int, letter: DeadLetter, raw_lsn: int = 0) -> bytes:
    """A record for a rejected message."""
    body = {
        "k": key,
        "h": digest,
        "r": letter.received_ms,
        "l": raw_lsn,
        "x": {
            "t": letter.topic,
            "why": letter.reason,
            "d": letter.detail,
            "b": base64.b64encode(letter.payload).decode("ascii"),
            "n": letter.size,
            "i": letter.institution,
            "v": letter.device,
        },
    }
    return orjson.dumps(body)


def decode(body: bytes) -> SpoolRecord:
    """The inverse of the encoders."""
    data = orjson.loads(body)
    letter = None
    if (x := data.get("x")) is not None:
        letter = DeadLetter(
            received_ms=data["r"],
            topic=x["t"],
            reason=x["why"],
            detail=x["d"],
            payload=base64.b64decode(x["b"]),
            size=x["n"],
            institution=x["i"],
            device=x["v"],
        )
    points = [Point.from_wire(w) for w in data.get("p", ())]
    message_id = MessageId(*q) if (q := data.get("q")) is not None else None
    return SpoolRecord(
        data["k"], data["h"], points, letter, data["r"], data.get("l", 0), message_id
    )

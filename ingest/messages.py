"""What the receive edge hands on: a raw message, and the verdict on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.models import DeviceMessage


@dataclass(frozen=True, slots=True)
class RawMessage:
    """An MQTT message as it arrived, before any parsing."""

    topic: str
    payload: bytes
    received_at: datetime
    retained: bool = False
    dup: bool = False
    lsn: int = 0  # its place in the raw spool: tells a re-read after a crash from new input
    size: int | None = None  # of the payload as it arrived, if only its start was kept


@dataclass(frozen=True, slots=True)
class Rejected:
    """Bad input: why, and what it was (contract section 1, "Bad input")."""

    reason: str
    detail: str
    raw: RawMessage
    institution: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid device message."""

    message: DeviceMessage
    raw: RawMessage


Verdict = Accepted | Rejected

"""Alert changes as events of the log (core/eventlog.py), and back.

The body is what the live stream sends (contract section 5): `{action, at, actor, note,
alert}`, the alert as the API shows it. The subject (the device, or `zone:…` for a confirmed
fire) and the raw-spool position of the message that caused the change travel beside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from core.alerting import AlertChange
from core.clock import iso_utc
from core.eventlog import ALERT, LogEvent, NewEvent

Change = tuple[str, AlertChange]  # the subject (device, or zone) and the change


def to_event(subject: str, change: AlertChange, raw_lsn: int = 0) -> NewEvent:
    """The log event of one change."""
    body = {
        "action": change.action.value,
        "at": iso_utc(change.at),
        "actor": change.actor,
        "note": change.note,
        "alert": change.alert.model_dump(mode="json"),
    }
    return NewEvent(ALERT, subject, change.alert.institution, orjson.dumps(body), raw_lsn)


def from_event(event: LogEvent) -> Change:
    """The subject and change an alert event carries."""
    return event.subject, AlertChange.model_validate_json(event.data)


def alert_changes(events: Iterable[LogEvent]) -> list[tuple[LogEvent, Change]]:
    """The alert events among `events`, decoded, in order."""
    return [(event, from_event(event)) for event in events if event.kind == ALERT]

"""The consumer that keeps the SQL tables of alerts in step with the event log."""

from __future__ import annotations

from collections.abc import Sequence

from alerts.events import alert_changes
from alerts.store import PROJECTION, AlertStore
from core.eventlog import LogEvent


class AlertProjection:
    """Applies alert events to the `alerts` and `alert_history` tables, a batch a transaction."""

    name = PROJECTION

    def __init__(self, store: AlertStore) -> None:
        self._store = store
        self.position = 0

    def load(self) -> None:
        """Resume after the last position the tables hold."""
        self.position = self._store.position()

    def handle(self, events: Sequence[LogEvent]) -> None:
        """Store the batch's alert changes and its last position together."""
        found = alert_changes(events)
        lsns = [event.raw_lsn for event, _ in found if event.raw_lsn]
        self._store.apply(
            [change for _, change in found], events[-1].position, max(lsns) if lsns else None
        )
        self.position = events[-1].position

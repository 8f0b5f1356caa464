"""The ledger as a consumer of the event log: alert changes become tickets by the policy."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from core.alerting import AlertChange
from core.checkpoints import SqlCheckpoints
from core.eventlog import ALERT, LogEvent
from tickets.ledger import Ledger


class LedgerConsumer:
    """Hands each alert change to the ledger, in order; its position is kept in the database.

    The ledger's handling is idempotent (an alert attached once, a trigger set once, a
    clearing recorded once), and the position is stored after each change that may have
    written, so at most that one comes again after a crash, without harm.
    """

    name = "ledger"

    def __init__(self, ledger: Ledger, engine: Engine) -> None:
        self._ledger = ledger
        self._checkpoints = SqlCheckpoints(engine)
        self.position = 0

    def load(self) -> None:
        """Resume after the stored position."""
        self.position = self._checkpoints.load(self.name)

    def handle(self, events: Sequence[LogEvent]) -> None:
        """Each alert change to the ledger; the position stored after what was done."""
        done = self.position
        try:
            for event in events:
                if event.kind == ALERT:
                    change = AlertChange.model_validate_json(event.data)
                    if self._ledger.concerns(change):
                        self._ledger.on_alert(change)
                        done = event.position
                        self._save(done)
                        continue
                done = event.position  # nothing for the ledger
        finally:
            self._save(done)  # what was done; a failed event comes again

    def _save(self, position: int) -> None:
        if position != self.position:
            self._checkpoints.save(self.name, position)
            self.position = position

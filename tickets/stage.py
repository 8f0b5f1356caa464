"""The ledger's stage: the ledger, its consumer of the event log, its relay and its clock.

Alert changes come from the event log (tickets/consumer.py); ticket changes go back to it
through the outbox relay (tickets/relay.py). The ledger's database work never delays the
alarm path: the alarm is on the log before the ledger sees it.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from core.clock import Clock, SystemClock
from core.health import Component
from core.loops import repeat
from core.ports import EventLog
from tickets.attachments import AttachmentStore
from tickets.consumer import LedgerConsumer
from tickets.ledger import InstitutionLookup, Ledger
from tickets.policy import Policy
from tickets.relay import TicketRelay
from tickets.store import TicketStore

log = logging.getLogger(__name__)

TICK_S = 5.0  # delayed openings and escalation are minutes and hours: seconds are enough


class TicketStage:
    """Owns the ledger and the parts that connect it to the event log."""

    def __init__(
        self,
        policy: Policy,
        database: Engine,
        institutions: InstitutionLookup,
        events: EventLog,
        *,
        clock: Clock | None = None,
        attachments: AttachmentStore | None = None,
    ) -> None:
        self.store = TicketStore(database)
        self.attachments = attachments  # None: evidence by link only
        self.ledger = Ledger(self.store, policy, institutions, clock or SystemClock())
        self.consumer = LedgerConsumer(self.ledger, database)
        self.relay = TicketRelay(database, events)
        self.store.after_commit = self.relay.wake

    async def run_clock(self, component: Component) -> None:
        """Delayed openings and escalation, every few seconds, until cancelled."""
        await repeat(component, self.ledger.tick, every_s=TICK_S)

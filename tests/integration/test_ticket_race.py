"""Two processes on one PostgreSQL database, handling the same alerts at the same moment."""

from __future__ import annotations

import multiprocessing
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity
from core.db import make_engine, upgrade
from core.registry.models import Institution, InstitutionType
from tests.servers import Postgres
from tickets.ledger import Ledger
from tickets.models import Ticket, TicketChange
from tickets.policy import load_policy
from tickets.store import TicketQuery, TicketStore
from tickets.tables import ticket_alerts, ticket_events

DEVICES = 30
CODES = ("sensor_fault", "chamber_dirty", "comm_fault")


def institution(institution_id: str) -> Institution:
    return Institution(id=institution_id, name="阳光养老院", type=InstitutionType.ELDERLY_CARE)


def changes() -> list[AlertChange]:
    """Three faults of each of 30 detectors: one ticket each, three alerts on it."""
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    out = []
    for device in range(DEVICES):
        for n, code in enumerate(CODES):
            alert = Alert(
                id=f"a{device:03d}{n}",
                kind=AlertKind.DEVICE_FAULT,
                code=code,
                severity=Severity.MAJOR,
                state=AlertState.ACTIVE,
                institution="inst-1",
                device=f"smoke-{device}",
                raised_at=now,
                updated_at=now,
                last_seen_at=now,
            )
            out.append(AlertChange(alert=alert, action=AlertAction.RAISED, at=now))
    return out


def worker(url: str, ready: Any, start: Any, results: Any, seed: int) -> None:
    """One hazardwatch process's ledger, handling every change (in its own order)."""
    store = CountingStore(make_engine(url))
    ledger = Ledger(store, load_policy(), institution)
    mine = changes()
    random.Random(seed).shuffle(mine)
    ready.release()
    start.wait(30)
    for change in mine:
        ledger.on_alert(change)
    results.put((seed, store.done.count("opened"), store.done.count("attached")))


class CountingStore(TicketStore):
    """The ledger's store, counting the changes this process made."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.done: list[str] = []

    def create(self, change: TicketChange) -> None:
        super().create(change)
        self.done.append(change.event.action.value)

    def change(
        self,
        ticket_id: str,
        make: Callable[[Ticket], TicketChange | None],
        new_alert: str | None = None,
    ) -> TicketChange | None:
        made = super().change(ticket_id, make, new_alert)
        if made is not None:
            self.done.append(made.event.action.value)
        return made


def test_two_processes_racing_on_the_same_alerts_open_one_ticket_each(postgres: Postgres) -> None:
    url = postgres.create_database(f"race_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Semaphore(0), context.Event(), context.Queue()
    workers = [
        context.Process(target=worker, args=(url, ready, start, results, seed)) for seed in (1, 2)
    ]
    for process in workers:
        process.start()
    for _ in workers:  # both loaded and connected: then they start at the same moment
        assert ready.acquire(timeout=60), "a worker did not start"
    start.set()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0, "a worker failed"
    counts = [results.get(timeout=5) for _ in workers]
    assert all(opened + attached > 0 for _, opened, attached in counts), (
        f"both processes must have done part of the work: {counts}"
    )
    assert sum(c[1] for c in counts) == DEVICES and sum(c[2] for c in counts) == DEVICES * 2

    engine = make_engine(url)
    store = TicketStore(engine)
    tickets = store.search(TicketQuery(), limit=1000)
    assert len(tickets) == DEVICES, "one ticket per device and category"
    for ticket in tickets:
        assert len(ticket.alert_ids) == 3 and ticket.occurrences == 3, ticket
    with engine.connect() as connection:
        attached = connection.execute(select(func.count()).select_from(ticket_alerts)).scalar()
        actions: dict[str, int] = dict(
            connection.execute(
                select(ticket_events.c.action, func.count()).group_by(ticket_events.c.action)
            ).all()
        )
    assert attached == DEVICES * 3, "every alert attached once"
    assert actions == {"opened": DEVICES, "attached": DEVICES * 2}
    engine.dispose()

"""The alert writer while the database is down: every alarm is shown at once, none is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import OperationalError

from alerts.writer import AlertWriter
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity, new_id


class FlakyStore:
    """Refuses every save until `up` is set; then keeps what it is given."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.saved: list[tuple[list[str], int | None]] = []
        self.tries = 0

    def save(
        self,
        changes: Sequence[tuple[str, AlertChange]],
        lsn: int | None,
        deliveries: Iterable[Any] = (),
        now: datetime | None = None,
    ) -> None:
        self.tries += 1
        if not self.up.is_set():
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        self.saved.append(([c.alert.id for _, c in changes], lsn))


def raised(device: str) -> tuple[str, AlertChange]:
    now = datetime.now(UTC)
    alert = Alert(
        id=new_id(),
        kind=AlertKind.SMOKE_ALARM,
        severity=Severity.CRITICAL,
        state=AlertState.ACTIVE,
        institution="inst-1",
        device=device,
        raised_at=now,
        updated_at=now,
        last_seen_at=now,
    )
    return device, AlertChange(alert=alert, action=AlertAction.RAISED, at=now)


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_alarms_during_an_outage_are_shown_at_once_and_stored_together_later() -> None:
    store = FlakyStore()
    writer = AlertWriter(store)  # type: ignore[arg-type]
    shown: list[tuple[float, str]] = []
    writer.add_listener(lambda change: shown.append((time.monotonic(), change.alert.device)))
    writer.start()
    try:
        sent: dict[str, float] = {}
        tickets = []
        for lsn, device in enumerate(["smoke-1", "smoke-2", "smoke-3"], start=1):
            sent[device] = time.monotonic()
            tickets.append(writer.submit([raised(device)], lsn))
            wait_for(lambda device=device: device in [d for _, d in shown])
            time.sleep(0.3)  # the writer is in its back-off by now
        assert [d for _, d in shown] == ["smoke-1", "smoke-2", "smoke-3"]
        assert all(at - sent[d] < 0.25 for at, d in shown), "none waits for the database"
        assert not writer.wait(tickets[-1], 0.1) and store.saved == []
        store.up.set()
        assert writer.wait(tickets[-1], 10), "stored once the database is back"
        assert [len(ids) for ids, _ in store.saved] == [3] and store.saved[0][1] == 3
        assert writer.pending == 0 and len(shown) == 3, "each shown once"
    finally:
        writer.stop()

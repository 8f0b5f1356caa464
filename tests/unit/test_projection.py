"""The SQL projection of alerts: a batch applied twice is applied once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alerts.store import AlertStore
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity
from core.db import make_engine, upgrade

AT = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def test_a_batch_whose_commit_answer_was_lost_is_not_applied_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    upgrade(url)
    store = AlertStore(make_engine(url))
    alert = Alert(
        id="a1",
        kind=AlertKind.SMOKE_ALARM,
        severity=Severity.CRITICAL,
        state=AlertState.ACTIVE,
        institution="inst-1",
        device="smoke-1",
        raised_at=AT,
        updated_at=AT,
        last_seen_at=AT,
    )
    raised = AlertChange(alert=alert, action=AlertAction.RAISED, at=AT)
    store.apply([("smoke-1", raised)], position=7, lsn=3)
    store.apply([("smoke-1", raised)], position=7, lsn=3)  # the retry of the same batch
    store.apply([("smoke-1", raised)], position=5)  # an older one
    assert [entry.action for entry in store.history("a1")] == [AlertAction.RAISED]
    assert store.position() == 7 and store.checkpoint() == 3

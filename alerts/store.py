"""Alerts in the SQL database: current rows, history, checkpoint and outbox."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Engine,
    RowMapping,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from alerts.tables import alert_checkpoint, alert_history, alerts, outbox
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState

_CHECKPOINT = "engine"
# Repeats change count and last value only: they update the row but are not history.
_NOT_HISTORY = frozenset({AlertAction.REPEATED})
# Built once: building `update(...).values(row)` for every change cost more than running it.
_UPDATE_ALERT = update(alerts).where(alerts.c.id == bindparam("alert_id"))
_INSERT_ALERT = insert(alerts)


def open_key(subject: str, kind: AlertKind, code: str) -> str:
    """The key that the unique constraint holds to one open alert."""
    return f"{subject}|{kind.value}|{code}"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One delivery to make: to a target, about an alert."""

    target: str
    alert_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of an alert's history."""

    at: datetime
    action: AlertAction
    actor: str
    note: str | None
    state: AlertState
    severity: str
    value: float | None


@dataclass(frozen=True, slots=True)
class Pending:
    """An undelivered outbox row."""

    id: int
    target: str
    alert_id: str
    payload: dict[str, Any]
    attempts: int


def _row(alert: Alert, subject: str) -> dict[str, Any]:
    values = alert.model_dump(exclude={"escalation_level"})
    values["subject"] = subject
    values["open_key"] = open_key(subject, alert.kind, alert.code) if alert.is_open else None
    return values


def _alert(row: RowMapping) -> Alert:
    values = {k: v for k, v in row.items() if k not in ("subject", "open_key")}
    return Alert.model_validate(values)


class AlertStore:
    """All SQL the engine, the dispatcher and the API need."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self) -> bool:
        """True when the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    def save(
        self,
        changes: Sequence[tuple[str, AlertChange]],
        lsn: int | None,
        deliveries: Iterable[OutboxItem] = (),
        now: datetime | None = None,
    ) -> None:
        """Store changes (with each alert's subject), outbox rows and checkpoint at once."""
        with self.engine.begin() as connection:
            self._save(connection, changes, lsn, deliveries, now)

    def enqueue(self, deliveries: Iterable[OutboxItem], now: datetime) -> None:
        """Outbox rows about something other than an alert change (a hazard ticket)."""
        with self.engine.begin() as connection:
            self._save(connection, [], None, deliveries, now)

    def rehearse(
        self, changes: Sequence[tuple[str, AlertChange]], deliveries: Iterable[OutboxItem]
    ) -> None:
        """Save and roll back: the statements are compiled and cached before the first alarm.

        Compiling them took a few hundred milliseconds under load (bench.alert_latency), which
        the first alarm after a start would otherwise wait for.
        """
        with self.engine.connect() as connection, connection.begin() as transaction:
            self._save(connection, changes, 0, deliveries, datetime.now(UTC))
            transaction.rollback()

    def _save(
        self,
        connection: Any,
        changes: Sequence[tuple[str, AlertChange]],
        lsn: int | None,
        deliveries: Iterable[OutboxItem],
        now: datetime | None,
    ) -> None:
        latest: dict[str, tuple[str, Alert]] = {}
        history: list[dict[str, Any]] = []
        for subject, change in changes:
            latest[change.alert.id] = (subject, change.alert)
            if change.action not in _NOT_HISTORY:
                history.append(_history_row(change))
        for subject, alert in latest.values():
            values = _row(alert, subject)
            done = connection.execute(_UPDATE_ALERT, {"alert_id": alert.id, **values})
            if done.rowcount == 0:
                connection.execute(_INSERT_ALERT, values)
        if history:
            connection.execute(insert(alert_history), history)
        rows = [
            {
                "target": item.target,
                "alert_id": item.alert_id,
                "payload": item.payload,
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for item in deliveries
        ]
        if rows:
            connection.execute(insert(outbox), rows)
        if lsn is not None:
            self._checkpoint(connection, lsn)

    def _checkpoint(self, connection: Any, lsn: int) -> None:
        done = connection.execute(
            update(alert_checkpoint)
            .where(alert_checkpoint.c.name == _CHECKPOINT, alert_checkpoint.c.lsn < lsn)
            .values(lsn=lsn)
        )
        if done.rowcount == 0 and self.checkpoint(connection) is None:
            connection.execute(insert(alert_checkpoint).values(name=_CHECKPOINT, lsn=lsn))

    def checkpoint(self, connection: Any = None) -> int | None:
        """How far through the raw spool stored changes go."""
        query = select(alert_checkpoint.c.lsn).where(alert_checkpoint.c.name == _CHECKPOINT)
        if connection is not None:
            value: int | None = connection.execute(query).scalar()
            return value
        with self.engine.connect() as own:
            return own.execute(query).scalar()

    def open_alerts(self) -> list[tuple[str, Alert]]:
        """Every alert still on the board, with its subject."""
        query = select(alerts).where(alerts.c.open_key.is_not(None))
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [(row["subject"], _alert(row)) for row in rows]

    def get(self, alert_id: str) -> Alert | None:
        """One alert, open or not."""
        with self.engine.connect() as connection:
            row = connection.execute(select(alerts).where(alerts.c.id == alert_id)).mappings()
            found = row.first()
        return _alert(found) if found else None

    def search(
        self,
        *,
        states: Sequence[str] = (),
        institutions: Sequence[str] | None = None,
        kind: str | None = None,
        device: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Alert]:
        """Alerts, newest first; `institutions` None means all."""
        query = select(alerts).order_by(alerts.c.raised_at.desc(), alerts.c.id.desc())
        if states:
            query = query.where(alerts.c.state.in_(states))
        if institutions is not None:
            query = query.where(alerts.c.institution.in_(institutions))
        if kind:
            query = query.where(alerts.c.kind == kind)
        if device:
            query = query.where(alerts.c.device == device)
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).mappings().all()
        return [_alert(row) for row in rows]

    def history(self, alert_id: str) -> list[HistoryEntry]:
        """An alert's history, oldest first."""
        query = (
            select(alert_history)
            .where(alert_history.c.alert_id == alert_id)
            .order_by(alert_history.c.id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            HistoryEntry(
                at=row["at"],
                action=AlertAction(row["action"]),
                actor=row["actor"],
                note=row["note"],
                state=AlertState(row["state"]),
                severity=row["severity"],
                value=row["value"],
            )
            for row in rows
        ]

    def unconfirmed_clears(self, since: datetime) -> list[tuple[str, datetime]]:
        """(device, when) of smoke alarms cleared without confirmation since `since`."""
        query = (
            select(alerts.c.device, alert_history.c.at)
            .join(alerts, alerts.c.id == alert_history.c.alert_id)
            .where(
                and_(
                    alerts.c.kind == AlertKind.SMOKE_ALARM.value,
                    alerts.c.confirmed.is_(False),
                    alert_history.c.action == AlertAction.CLEARED.value,
                    alert_history.c.at >= since,
                )
            )
            .order_by(alert_history.c.at)
        )
        with self.engine.connect() as connection:
            return [(row[0], row[1]) for row in connection.execute(query)]

    def due_deliveries(self, now: datetime, limit: int = 200) -> list[Pending]:
        """Undelivered outbox rows whose time has come, oldest first."""
        query = (
            select(outbox)
            .where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            Pending(r["id"], r["target"], r["alert_id"], r["payload"], r["attempts"]) for r in rows
        ]

    def delivered(self, ids: Sequence[int], now: datetime) -> None:
        """Mark outbox rows as delivered."""
        if ids:
            with self.engine.begin() as connection:
                connection.execute(
                    update(outbox).where(outbox.c.id.in_(ids)).values(delivered_at=now)
                )

    def failed(self, row_id: int, error: str, retry_at: datetime) -> None:
        """Count a failed attempt and set the next one."""
        with self.engine.begin() as connection:
            connection.execute(
                update(outbox)
                .where(outbox.c.id == row_id)
                .values(
                    attempts=outbox.c.attempts + 1, last_error=error[:500], next_attempt_at=retry_at
                )
            )

    def waiting_targets(self, now: datetime) -> set[str]:
        """Targets with an undelivered row that waits for a retry: their later rows wait too."""
        query = (
            select(outbox.c.target)
            .where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at > now)
            .distinct()
        )
        with self.engine.connect() as connection:
            return {row[0] for row in connection.execute(query)}

    def prune_delivered(self, before: datetime) -> int:
        """Forget outbox rows delivered before `before` (the history keeps every change)."""
        with self.engine.begin() as connection:
            done = connection.execute(
                delete(outbox).where(
                    outbox.c.delivered_at.is_not(None), outbox.c.delivered_at < before
                )
            )
        return int(done.rowcount or 0)

    def undelivered(self) -> int:
        """How many outbox rows wait."""
        query = select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)


def _history_row(change: AlertChange) -> dict[str, Any]:
    alert = change.alert
    return {
        "alert_id": alert.id,
        "at": change.at,
        "action": change.action.value,
        "actor": change.actor,
        "note": change.note,
        "state": alert.state.value,
        "severity": alert.severity.value,
        "value": alert.value,
    }

"""Alerts in the SQL database: the projection of the event log's alert changes.

The tables (current rows and history) are kept by a consumer of the event log
(alerts/projection.py), in the transaction that also moves its position: they are what the
log says, as of that position. The alarm path never waits for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    and_,
    bindparam,
    insert,
    select,
    text,
    update,
)

from alerts.events import Change
from alerts.tables import alert_checkpoint, alert_history, alerts
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState
from core.checkpoints import load_position, save_position

_CHECKPOINT = "engine"
PROJECTION = "alerts-sql"  # the consumer that keeps these tables
# Repeats change count and last value only: they update the row but are not history.
_NOT_HISTORY = frozenset({AlertAction.REPEATED})
# Built once: building `update(...).values(row)` for every change cost more than running it.
_UPDATE_ALERT = update(alerts).where(alerts.c.id == bindparam("alert_id"))
_INSERT_ALERT = insert(alerts)
_NOT_STORED = {"escalation_level", "ticket_id"}  # computed; a join on the ledger's table


def open_key(subject: str, kind: AlertKind, code: str) -> str:
    """The key that the unique constraint holds to one open alert."""
    return f"{subject}|{kind.value}|{code}"


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
class Projected:
    """The tables as of a position of the log: where the engine starts from."""

    position: int  # the last event applied
    checkpoint_lsn: int  # the raw-spool position of the last message whose changes are in
    open_alerts: list[tuple[str, Alert]]
    unconfirmed_clears: list[tuple[str, datetime]]


def _row(alert: Alert, subject: str) -> dict[str, Any]:
    values = alert.model_dump(exclude=_NOT_STORED)
    values["subject"] = subject
    values["open_key"] = open_key(subject, alert.kind, alert.code) if alert.is_open else None
    return values


def _alert(row: RowMapping) -> Alert:
    values = {k: v for k, v in row.items() if k not in ("subject", "open_key", "ticket_id")}
    return Alert.model_validate(values)


class AlertStore:
    """All SQL of the projection and of the API's reads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self) -> bool:
        """True when the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    def apply(self, changes: Sequence[Change], position: int, lsn: int | None = None) -> None:
        """Store changes (with each alert's subject) as of log `position`, in one transaction.

        `lsn`: the raw-spool position of the last message among them, if any. A batch the
        tables hold already (its commit was made, but its answer lost) is not applied again.
        """
        with self.engine.begin() as connection:
            if load_position(connection, PROJECTION, lock=True) >= position:
                return
            self._apply(connection, changes, lsn)
            save_position(connection, PROJECTION, position)

    def position(self) -> int:
        """The last log position applied."""
        with self.engine.connect() as connection:
            return load_position(connection, PROJECTION)

    def projected(self, nuisance_since: datetime) -> Projected:
        """The position, checkpoint and open alerts, read together."""
        with self.engine.begin() as connection:
            position = load_position(connection, PROJECTION)
            lsn = self.checkpoint(connection) or 0
            rows = connection.execute(select(alerts).where(alerts.c.open_key.is_not(None)))
            opened = [(row["subject"], _alert(row)) for row in rows.mappings()]
            clears = self._unconfirmed_clears(connection, nuisance_since)
        return Projected(position, lsn, opened, clears)

    def _apply(self, connection: Connection, changes: Sequence[Change], lsn: int | None) -> None:
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
        if lsn:
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

    def _unconfirmed_clears(
        self, connection: Connection, since: datetime
    ) -> list[tuple[str, datetime]]:
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
        return [(row[0], row[1]) for row in connection.execute(query)]


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

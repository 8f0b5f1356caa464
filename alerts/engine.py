"""The alert engine: rules per device, one open alert per (device, kind), the lifecycle.

Messages come in from the digester thread, in order per device; silence and escalation from
the alert clock; acknowledgements from the API. One lock orders them all. Changes go to the
journal (alerts/journal.py), which puts them on the event log for everyone else.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from alerts.events import Change
from alerts.offline import OfflineWatch
from alerts.rules import (
    BATTERY,
    CO,
    GAS,
    OFFLINE,
    SMOKE,
    TESTABLE,
    Condition,
    DeviceRules,
    Key,
    Rules,
    fault_key,
)
from alerts.store import AlertStore
from core.alerting import (
    SYSTEM,
    Alert,
    AlertAction,
    AlertChange,
    AlertKind,
    AlertState,
    Severity,
    new_id,
)
from core.clock import Clock, SystemClock
from core.errors import InvalidTransitionError
from core.models import DeviceMessage, Event, EventType, Status
from core.registry.directory import DeviceLookup
from core.settings import AlertSettings

log = logging.getLogger(__name__)

FIRE: Key = (AlertKind.FIRE_CONFIRMED, "")
NUISANCE: Key = (AlertKind.DEVICE_FAULT, "nuisance_alarms")
_ON_BOARD = (AlertState.ACTIVE, AlertState.ACKNOWLEDGED)  # the condition holds
_DAY = timedelta(hours=24)
_ESCALATION_CHECK = timedelta(seconds=1)


class ChangeWriter(Protocol):
    """Where the engine's changes go, in order (alerts/journal.py)."""

    def submit(self, changes: list[Change], lsn: int | None) -> None:
        """Take changes, in order; `lsn`: the message that caused them."""
        ...

    def flush(self) -> int:
        """Make everything taken durable; raises OSError when it cannot."""
        ...


@dataclass(frozen=True)
class Recovered:
    """What the engine starts from: the alerts on the board, as stored and logged."""

    open_alerts: list[tuple[str, Alert]] = field(default_factory=list)  # with their subjects
    checkpoint_lsn: int = 0  # messages up to here were evaluated and their changes logged
    unconfirmed_clears: list[tuple[str, datetime]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a message's change happens: the device, its institution and zone."""

    subject: str
    device: str
    institution: str
    zone: str | None


def zone_subject(institution: str, zone: str | None) -> str:
    """The subject of a zone's fire_confirmed alert; no zone means the whole institution."""
    return f"zone:{institution}/{zone or ''}"


class AlertEngine:
    """Keeps alerts in step with what devices report."""

    def __init__(
        self,
        settings: AlertSettings,
        directory: DeviceLookup,
        store: AlertStore,
        writer: ChangeWriter,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self._rules = Rules(settings)
        self._directory = directory
        self._store = store
        self._writer = writer
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        # Rule state of the devices whose state is not the default (most never leave it).
        self._devices: dict[str, DeviceRules] = {}
        self._handed: str | None = None  # the device whose state _state last handed out
        self._spare: DeviceRules | None = None  # a dropped state, at its default, to reuse
        self._open: dict[str, dict[Key, Alert]] = {}  # subject -> condition -> alert
        self._by_id: dict[str, tuple[str, Key]] = {}
        self._changed: dict[tuple[str, Key], datetime] = {}  # message time of the last change
        self._zones: dict[str, dict[str, datetime]] = {}  # zone subject -> device -> alarm since
        self._nuisance: dict[str, deque[datetime]] = {}
        self._heartbeat: dict[str, int] = {}  # announced in status messages
        self.watch = OfflineWatch(self._window_s)
        self.checkpoint_lsn = 0
        self._next_escalation = datetime.min.replace(tzinfo=UTC)
        self.raised: dict[tuple[str, str], int] = {}  # (kind, severity) -> count, for metrics

    # ------------------------------------------------------------------ start-up

    def load(
        self,
        recovered: Recovered | None = None,
        snapshot: Path | None = None,
        seen: Iterable[tuple[str, float]] = (),
    ) -> None:
        """Rebuild state from what was stored and logged, the last-seen snapshot and the
        messages recovered from the spool."""
        recovered = recovered or Recovered()
        with self._lock:
            self.checkpoint_lsn = recovered.checkpoint_lsn
            for subject, alert in recovered.open_alerts:
                key = (alert.kind, alert.code)
                self._open.setdefault(subject, {})[key] = alert
                self._by_id[alert.id] = (subject, key)
                self._changed[(subject, key)] = alert.last_seen_at
                self._seed(subject, key, alert)
            since = self._clock.now() - _DAY
            for device, cleared in recovered.unconfirmed_clears:
                if cleared >= since:
                    self._nuisance.setdefault(device, deque()).append(cleared)
            if snapshot is not None:
                self.watch.load(snapshot)
            for device, received in seen:
                self.watch.seen(device, received)
        log.info(
            "alert engine: %d open alerts, %d devices watched for silence, checkpoint %d",
            len(self._by_id),
            len(self.watch),
            self.checkpoint_lsn,
        )

    def _seed(self, subject: str, key: Key, alert: Alert) -> None:
        """Give the rules what an open alert says, so that a restart does not clear it."""
        if subject.startswith("zone:"):
            return
        if alert.state in _ON_BOARD and key == SMOKE:
            self._zones.setdefault(self._zone_of(subject), {})[subject] = alert.raised_at
        state = self._state(subject)
        if state is None or alert.state not in _ON_BOARD:
            return
        if key in TESTABLE and alert.value is None:
            state.own_alarm = state.own_alarm | {key}
        elif key == SMOKE:
            state.smoke_high = True
        elif key == GAS:
            state.gas_level = 2 if alert.severity is Severity.CRITICAL else 1
        elif key == CO:
            state.co_high = True
        elif key == BATTERY:
            state.battery_low = True
        elif key[0] is AlertKind.DEVICE_FAULT and key != NUISANCE:
            state.faults = state.faults | {fault_key(key[1])}

    def _zone_of(self, device: str) -> str:
        info = self._directory.lookup(device)
        return zone_subject(info.institution, info.zone) if info else zone_subject(device, None)

    def _state(self, device: str) -> DeviceRules | None:
        """The device's rule state, to change in place; kept only while it is not the default.

        A DeviceRules per device that ever sent anything cost 170 bytes a device. The caller
        changes the state after this returns, so the one handed out last is looked at on the
        next call (all under the lock) and dropped if it is back at the default.
        """
        self._drop_default()
        state = self._devices.get(device)
        if state is None:
            info = self._directory.lookup(device)
            if info is None:
                return None
            state, self._spare = self._spare, None
            if state is None:
                state = DeviceRules(info.kind, info.thresholds)
            else:  # the one dropped last, at its default: no allocation per message
                state.kind, state.thresholds = info.kind, info.thresholds
            self._devices[device] = state
        self._handed = device
        return state

    def _drop_default(self) -> None:
        device, self._handed = self._handed, None
        if device is None:
            return
        state = self._devices.get(device)
        if state is not None and state.is_default():
            del self._devices[device]
            self._spare = state

    def _window_s(self, device: str) -> float:
        heartbeat = self._heartbeat.get(device)
        if heartbeat is None:
            info = self._directory.lookup(device)
            heartbeat = info.heartbeat_s if info else 300
        return self.settings.offline_factor * heartbeat

    # ------------------------------------------------------------------ messages

    def observe(self, message: DeviceMessage, received_at: datetime, lsn: int = 0) -> None:
        """Evaluate one accepted message (`lsn`: its place in the raw spool)."""
        device = message.device
        with self._lock:
            self.watch.seen(device, received_at.timestamp())
            announced = message.heartbeat_s if isinstance(message, Status) else None
            if announced is not None and self._heartbeat.get(device) != announced:
                self._heartbeat[device] = announced
                self.watch.refile(device)
            info = self._directory.lookup(device)
            state = self._state(device)
            if info is None or state is None:
                return
            if state.kind is not info.kind:  # the registry was corrected
                state.kind = info.kind
            found = self._rules.observe(state, message)
            if lsn and lsn <= self.checkpoint_lsn:
                return  # evaluated and stored before a restart: state only
            opened = self._open.get(device)
            out: list[Change] = []
            place = _Place(device, device, info.institution, info.zone)
            for key, condition in found.items():
                if condition is None and (opened is None or key not in opened):
                    continue  # the common case: nothing wrong, nothing open
                self._settle(place, state, key, condition, message.ts, out)
            if isinstance(message, Event) and message.type is EventType.HUSH:
                self._hush(device, message, out)
            if out:
                self._writer.submit(out, lsn or None)

    def _settle(
        self,
        place: _Place,
        state: DeviceRules | None,
        key: Key,
        condition: Condition | None,
        at: datetime,
        out: list[Change],
    ) -> None:
        """Bring the alert of one condition in line with whether it holds."""
        mark = self._changed.get((place.subject, key))
        if mark is not None and at < mark:
            return  # older than the last change of this condition: out of order, ignored
        alert = self._open.get(place.subject, {}).get(key)
        confirmed = alert is not None and alert.confirmed
        now = self._clock.now()
        if condition is not None:
            raising = alert is None or alert.state is AlertState.CLEARED
            if raising and state is not None and key in TESTABLE and state.in_test(at):
                self._suppress(place, state, key, condition, at, out)
                return
            if alert is None:
                self._record(
                    place, key, self._new(place, key, condition, at), AlertAction.RAISED, out
                )
            elif alert.state is AlertState.CLEARED:
                update = _seen(alert, condition, at, now)
                update |= {"state": AlertState.ACTIVE, "cleared_at": None}
                self._record(
                    place, key, alert.model_copy(update=update), AlertAction.REACTIVATED, out
                )
            elif alert.severity is not condition.severity:
                update = _seen(alert, condition, at, now) | {"severity": condition.severity}
                self._record(place, key, alert.model_copy(update=update), AlertAction.SEVERITY, out)
            else:
                self._record(
                    place, key, alert.model_copy(update=_seen(alert, condition, at, now)),
                    AlertAction.REPEATED, out,
                )  # fmt: skip
                return  # a repeat is not a change of the condition
        elif alert is None or alert.state is AlertState.CLEARED:
            return
        elif alert.state is AlertState.ACTIVE:
            update = {"state": AlertState.CLEARED, "cleared_at": now, "updated_at": now}
            self._record(place, key, alert.model_copy(update=update), AlertAction.CLEARED, out)
        else:  # acknowledged, and now the condition is gone: done
            update = {
                "state": AlertState.RESOLVED,
                "cleared_at": now,
                "resolved_at": now,
                "resolved_by": SYSTEM,
                "updated_at": now,
            }
            self._record(place, key, alert.model_copy(update=update), AlertAction.RESOLVED, out)
        self._changed[(place.subject, key)] = at
        if key == SMOKE:
            self._smoke_changed(place, condition is not None, confirmed, at, out)

    def _new(self, place: _Place, key: Key, condition: Condition, at: datetime) -> Alert:
        now = self._clock.now()
        kind, code = key
        return Alert(
            id=new_id(),
            kind=kind,
            code=code,
            severity=condition.severity,
            state=AlertState.ACTIVE,
            institution=place.institution,
            device=place.device,
            zone=place.zone,
            raised_at=now,
            updated_at=now,
            last_seen_at=at,
            value=condition.value,
            detail=condition.detail[:500],
        )

    def _record(
        self, place: _Place, key: Key, alert: Alert, action: AlertAction, out: list[Change]
    ) -> None:
        self._put(place.subject, key, alert)
        out.append((place.subject, AlertChange(alert=alert, action=action, at=alert.updated_at)))
        if action is AlertAction.RAISED:
            counter = (alert.kind.value, alert.severity.value)
            self.raised[counter] = self.raised.get(counter, 0) + 1
            log.warning(
                "alert %s raised: %s %s device=%s institution=%s: %s",
                alert.id,
                alert.severity,
                alert.kind,
                alert.device,
                alert.institution,
                alert.detail,
            )

    def _put(self, subject: str, key: Key, alert: Alert) -> None:
        if alert.is_open:
            self._open.setdefault(subject, {})[key] = alert
            self._by_id[alert.id] = (subject, key)
            return
        opened = self._open.get(subject)
        if opened is not None:
            opened.pop(key, None)
            if not opened:
                del self._open[subject]
        self._by_id.pop(alert.id, None)

    def _suppress(
        self,
        place: _Place,
        state: DeviceRules,
        key: Key,
        condition: Condition,
        at: datetime,
        out: list[Change],
    ) -> None:
        """An alarm in a test-button window: recorded once per window, never on the board."""
        if key in state.suppressed:
            return
        state.suppressed = state.suppressed | {key}
        now = self._clock.now()
        record = self._new(place, key, condition, at).model_copy(
            update={
                "state": AlertState.RESOLVED,
                "resolved_at": now,
                "resolved_by": SYSTEM,
                "note": "test button: recorded, not raised",
            }
        )
        change = AlertChange(alert=record, action=AlertAction.SUPPRESSED, at=now, note=record.note)
        out.append((place.subject, change))

    def _hush(self, device: str, event: Event, out: list[Change]) -> None:
        now = self._clock.now()
        for key, alert in list(self._open.get(device, {}).items()):
            if key in TESTABLE and (event.source is None or key[0] is _SOURCE_KIND[event.source]):
                hushed = alert.model_copy(update={"hushed_at": now, "updated_at": now})
                self._put(device, key, hushed)
                out.append((device, AlertChange(alert=hushed, action=AlertAction.HUSHED, at=now)))

    # ------------------------------------------------------------------ zones

    def _smoke_changed(
        self, place: _Place, holds: bool, confirmed: bool, at: datetime, out: list[Change]
    ) -> None:
        """Confirm a fire when two detectors of a zone alarm within the window."""
        subject = zone_subject(place.institution, place.zone)
        members = self._zones.setdefault(subject, {})
        zone = _Place(subject, place.device, place.institution, place.zone)
        if not holds:
            members.pop(place.device, None)
            if not confirmed:
                self._count_nuisance(place, at, out)
            if not members:
                self._zones.pop(subject, None)
                self._settle(zone, None, FIRE, None, at, out)
            return
        members.setdefault(place.device, at)
        window = timedelta(seconds=self.settings.fire_window_s)
        recent = sorted(d for d, since in members.items() if abs(since - at) <= window)
        if len(recent) < 2 and FIRE not in self._open.get(subject, {}):
            return
        where = f"zone {place.zone}" if place.zone else "the institution (no zone set)"
        detail = f"{len(members)} detectors of {where} in smoke alarm: {', '.join(sorted(members))}"
        self._settle(zone, None, FIRE, Condition(Severity.CRITICAL, detail), at, out)
        for device in members:
            smoke = self._open.get(device, {}).get(SMOKE)
            if smoke is not None and not smoke.confirmed:
                now = self._clock.now()
                marked = smoke.model_copy(update={"confirmed": True, "updated_at": now})
                self._put(device, SMOKE, marked)
                out.append(
                    (device, AlertChange(alert=marked, action=AlertAction.CONFIRMED, at=now))
                )

    def _count_nuisance(self, place: _Place, at: datetime, out: list[Change]) -> None:
        """More than N smoke alarms in 24 h that cleared unconfirmed: the detector is suspect."""
        times = self._nuisance.setdefault(place.device, deque())
        times.append(at)
        while times and times[0] < at - _DAY:
            times.popleft()
        if len(times) > self.settings.nuisance_alarms:
            detail = f"{len(times)} smoke alarms in 24 h cleared without confirmation"
            self._settle(place, None, NUISANCE, Condition(Severity.MAJOR, detail), at, out)

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Raise offline alerts for silent devices and escalate unacknowledged critical ones."""
        now = self._clock.now()
        with self._lock:
            out: list[Change] = []
            for device, silent in self.watch.due(now.timestamp()):
                info = self._directory.lookup(device)
                if info is None:
                    continue
                window = self._window_s(device)
                detail = f"silent for {silent:.0f} s (allowed {window:.0f} s)"
                place = _Place(device, device, info.institution, info.zone)
                self._settle(place, None, OFFLINE, Condition(Severity.MAJOR, detail), now, out)
            if now >= self._next_escalation:  # once a second: it walks every open alert
                self._escalate(now, out)
                self._next_escalation = now + _ESCALATION_CHECK
            if out:
                self._writer.submit(out, None)

    def _escalate(self, now: datetime, out: list[Change]) -> None:
        interval = timedelta(seconds=self.settings.escalation_interval_s)
        for subject, opened in list(self._open.items()):
            for key, alert in list(opened.items()):
                if alert.severity is not Severity.CRITICAL or alert.state is not AlertState.ACTIVE:
                    continue
                if now < alert.raised_at + interval * (alert.escalations + 1):
                    continue
                escalated = alert.model_copy(
                    update={"escalations": alert.escalations + 1, "updated_at": now}
                )
                self._put(subject, key, escalated)
                note = f"not acknowledged: notified again, level {escalated.escalation_level}"
                change = AlertChange(
                    alert=escalated, action=AlertAction.ESCALATED, at=now, note=note
                )
                out.append((subject, change))

    # ------------------------------------------------------------------ people

    def acknowledge(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        """A person has seen the alert; a cleared one is then done."""
        return self._act(alert_id, actor, note, resolve=False)

    def resolve(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        """A person closes the alert (acknowledging it, if it was cleared)."""
        return self._act(alert_id, actor, note, resolve=True)

    def _act(self, alert_id: str, actor: str, note: str | None, *, resolve: bool) -> Alert:
        with self._lock:
            subject, key, alert = self._find_open(alert_id)
            now = self._clock.now()
            out: list[Change] = []
            if alert.state is AlertState.ACKNOWLEDGED and not resolve:
                raise InvalidTransitionError(
                    f"alert {alert_id} was acknowledged by {alert.acknowledged_by} "
                    f"at {alert.acknowledged_at}"
                )
            if alert.state is AlertState.ACTIVE and resolve:
                raise InvalidTransitionError(f"alert {alert_id} is active: acknowledge it first")
            if alert.state is not AlertState.ACKNOWLEDGED:
                alert = alert.model_copy(
                    update={
                        "state": AlertState.ACKNOWLEDGED,
                        "acknowledged_at": now,
                        "acknowledged_by": actor,
                        "note": note,
                        "updated_at": now,
                    }
                )
                self._emit(subject, key, alert, AlertAction.ACKNOWLEDGED, actor, note, out)
            if resolve or alert.cleared_at is not None:
                alert = alert.model_copy(
                    update={
                        "state": AlertState.RESOLVED,
                        "resolved_at": now,
                        "resolved_by": actor,
                        "note": note,
                        "updated_at": now,
                    }
                )
                self._emit(subject, key, alert, AlertAction.RESOLVED, actor, note, out)
            self._writer.submit(out, None)
        self._writer.flush()  # durable before the person is told it is done
        return alert

    def _emit(
        self,
        subject: str,
        key: Key,
        alert: Alert,
        action: AlertAction,
        actor: str,
        note: str | None,
        out: list[Change],
    ) -> None:
        self._put(subject, key, alert)
        out.append(
            (
                subject,
                AlertChange(
                    alert=alert, action=action, at=alert.updated_at, actor=actor, note=note
                ),
            )
        )

    def _find_open(self, alert_id: str) -> tuple[str, Key, Alert]:
        # Under the lock: memory only. A question to the database here, hung, would stop
        # every alarm behind it (the caller looked the alert up before taking the lock).
        where = self._by_id.get(alert_id)
        if where is None:
            raise InvalidTransitionError(f"alert {alert_id} is not open (resolved meanwhile)")
        subject, key = where
        return subject, key, self._open[subject][key]

    def open_alert(self, alert_id: str) -> Alert | None:
        """The alert if it is on the board (memory only: never waits for the database)."""
        with self._lock:
            where = self._by_id.get(alert_id)
            return self._open[where[0]][where[1]] if where is not None else None

    def get(self, alert_id: str) -> Alert | None:
        """The alert as the engine knows it now (open ones from memory)."""
        with self._lock:
            where = self._by_id.get(alert_id)
            if where is not None:
                return self._open[where[0]][where[1]]
        return self._store.get(alert_id)

    def open_alerts(self) -> list[Alert]:
        """Every alert on the board, newest first."""
        with self._lock:
            found = [alert for opened in self._open.values() for alert in opened.values()]
        return sorted(found, key=lambda a: (a.raised_at, a.id), reverse=True)

    def locked(self) -> threading.RLock:
        """The engine's lock, for reading its state from another thread."""
        return self._lock

    def stats(self) -> dict[str, Any]:
        """Counts for logs and metrics."""
        with self._lock:
            return {"open": len(self._by_id), "devices": len(self._devices)}


_SOURCE_KIND = {
    "smoke": AlertKind.SMOKE_ALARM,
    "gas": AlertKind.GAS_LEAK,
    "co": AlertKind.CO_ALARM,
}


def _seen(alert: Alert, condition: Condition, at: datetime, now: datetime) -> dict[str, Any]:
    """The fields a repeat of the condition updates."""
    return {
        "count": alert.count + 1,
        "value": condition.value if condition.value is not None else alert.value,
        "last_seen_at": max(at, alert.last_seen_at),
        "detail": condition.detail[:500],
        "updated_at": now,
    }

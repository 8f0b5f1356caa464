"""The ledger's work: tickets from alerts by policy, from people by hand, the loop, escalation.

Alert changes come from the event log (tickets/consumer.py), people's steps from the API, the
clock's from a timer. One lock orders them within a process; the database's unique keys order
two processes (a ticket opened by the other one is found and attached to). Every change is
written with its event for the log (tickets/store.py); nothing here tells anyone directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.alerting import SYSTEM, Alert, AlertAction, AlertChange, AlertState, Severity, new_id
from core.clock import Clock, SystemClock
from core.errors import InvalidInputError, InvalidTransitionError, NotFoundError
from core.registry.models import Institution
from tickets.lifecycle import step
from tickets.models import (
    MAX_ESCALATION_LEVEL,
    Evidence,
    Ticket,
    TicketAction,
    TicketChange,
    TicketEvent,
    TicketSource,
    TicketStatus,
)
from tickets.policy import Policy, Rule
from tickets.store import DuplicateTicketError, TicketStore, Trigger

log = logging.getLogger(__name__)

InstitutionLookup = Callable[[str], Institution | None]

# Alert changes that mean "the condition is there".
_PRESENT = frozenset({AlertAction.RAISED, AlertAction.REACTIVATED, AlertAction.SEVERITY})
_HOLDS = frozenset({AlertState.ACTIVE.value, AlertState.ACKNOWLEDGED.value})
# The steps that put an alert on a ticket: after one of them, its clearing is still to come.
_SENSED_FIRST = frozenset({TicketAction.OPENED.value, TicketAction.ATTACHED.value})
_UNTOUCHED = frozenset({TicketStatus.OPEN, TicketStatus.ASSIGNED})  # nobody worked on it yet
UNASSIGNED = "未指定"


class Ledger:
    """Opens, attaches, moves and escalates tickets."""

    def __init__(
        self,
        store: TicketStore,
        policy: Policy,
        institutions: InstitutionLookup,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self._institutions = institutions
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()

    def now(self) -> datetime:
        """The ledger's clock."""
        return self._clock.now()

    # ------------------------------------------------------------------ from alerts

    def concerns(self, change: AlertChange) -> bool:
        """Whether the ledger does anything with this change (a rule for its kind, not a
        repeat)."""
        return change.action is not AlertAction.REPEATED and (
            self.policy.rule(change.alert.kind) is not None
        )

    def on_alert(self, change: AlertChange) -> None:
        """One alert change from the event log, in order; again after a crash is harmless."""
        alert = change.alert
        rule = self.policy.rule(alert.kind)
        if rule is None or change.action is AlertAction.REPEATED:
            return
        with self._lock:
            self.store.note_alert_state(alert.id, alert.state.value)
            if change.action in _PRESENT and alert.state is not AlertState.RESOLVED:
                if rule.delay.total_seconds() == 0:
                    self._open_or_attach(alert, rule)
                elif change.action is not AlertAction.SEVERITY:  # counts from (re)appearing
                    due = change.at + rule.delay
                    self.store.add_trigger(Trigger(alert.id, due, alert.model_dump(mode="json")))
            elif change.action is AlertAction.CLEARED or (
                change.action is AlertAction.RESOLVED and alert.resolved_by == SYSTEM
            ):  # the condition went away (a person resolving an alert says nothing of it)
                self.store.drop_trigger(alert.id)
                self._condition_gone(alert.id, alert.kind, rule)

    def _open_or_attach(self, alert: Alert, rule: Rule) -> Ticket | None:
        """The ticket of the alert's device and category, opened or with the alert attached."""
        if self.store.ticket_of_alert(alert.id) is not None:
            return None  # handled already (a redelivered change, or the other process)
        for _ in range(3):  # lost a race: the winner's ticket is there to attach to
            existing = self.store.open_for(alert.device, rule.category)
            if existing is not None:
                return self._attach(existing, alert)
            change = self._new_from_alert(alert, rule)
            try:
                self.store.create(change)
            except DuplicateTicketError:
                if self.store.ticket_of_alert(alert.id) is not None:
                    return None
                continue
            return change.ticket
        log.error("could not open or find the ticket for alert %s", alert.id)
        return None

    def _attach(self, ticket: Ticket, alert: Alert) -> Ticket | None:
        def attach(fresh: Ticket) -> TicketChange | None:
            if not fresh.is_open:
                return None  # closed meanwhile: the next round opens a new one
            return step(
                fresh,
                TicketAction.ATTACHED,
                SYSTEM,
                self._clock.now(),
                note=alert.detail,
                alert_id=alert.id,
                occurrences=fresh.occurrences + 1,
                alert_ids=[*fresh.alert_ids, alert.id],
            )

        change = self._change(ticket.id, attach, new_alert=alert.id)
        return change.ticket if change is not None else None

    def _new_from_alert(self, alert: Alert, rule: Rule) -> TicketChange:
        now = self._clock.now()
        unit, person, phone = self._responsible(alert.institution, rule)
        where = f"设备 {alert.device}" + (f",防火分区 {alert.zone}" if alert.zone else "")
        ticket = Ticket(
            id=new_id(),
            category=rule.category,
            status=TicketStatus.OPEN,
            source=TicketSource.SENSOR,
            institution=alert.institution,
            device=alert.device,
            title=rule.title_zh,
            description=f"{where}:{alert.detail}",
            severity=rule.severity,
            major_hazard=rule.major_hazard,
            responsible_unit=unit,
            responsible_person=person,
            responsible_phone=phone,
            verification_required=rule.verification,
            found_at=alert.raised_at,
            due_at=now + rule.deadline,
            created_at=now,
            updated_at=now,
            reported_by=SYSTEM,
            alert_ids=[alert.id],
        )
        event = TicketEvent(
            at=now,
            action=TicketAction.OPENED,
            actor=SYSTEM,
            note=f"alert {alert.kind} {alert.id}: {alert.detail}",
            status=TicketStatus.OPEN,
            alert_id=alert.id,
        )
        return TicketChange(ticket=ticket, event=event)

    def _responsible(self, institution_id: str, rule: Rule) -> tuple[str, str, str | None]:
        if rule.route is not None:
            route = self.policy.routes[rule.route]
            return route.unit, route.person, route.phone
        institution = self._institutions(institution_id)
        if institution is None:
            return institution_id, UNASSIGNED, None
        person = institution.safety_manager or institution.principal
        if person is None:
            return institution.name, UNASSIGNED, None
        return institution.name, person.name, person.phone

    def _condition_gone(self, alert_id: str, kind: str, rule: Rule) -> None:
        """The alert's condition went away: recorded on its ticket, once (a change read again
        from the event log after a crash finds its step there and does nothing)."""
        ticket_id = self.store.ticket_of_alert(alert_id)
        ticket = self.store.get(ticket_id) if ticket_id else None
        if ticket is None or not ticket.is_open:
            return
        if self.store.last_step_about(ticket.id, alert_id) not in _SENSED_FIRST:
            return  # its clearing is recorded already
        now = self._clock.now()
        evidence = [Evidence(name=f"alert {alert_id}: condition cleared at {now.isoformat()}")]
        note = f"传感器显示已恢复 / the sensor shows the condition cleared ({kind})"
        said: dict[str, Any] = {"note": note, "evidence": evidence, "alert_id": alert_id}
        others = [a for a in ticket.alert_ids if a != alert_id]
        still = any(state in _HOLDS for state in self.store.alert_states(others).values())
        if still or ticket.status not in _UNTOUCHED or rule.when_cleared == "keep":
            self._change(ticket.id, lambda t: step(t, TicketAction.CLEARED, SYSTEM, now, **said))
            return
        # Nobody has worked on it: the system walks the loop as far as the policy lets it,
        # in one transaction (a crash half-way would leave it neither open nor done).
        walk = [TicketAction.ASSIGNED, TicketAction.STARTED, TicketAction.RECTIFIED]
        if rule.when_cleared == "close":
            walk.append(TicketAction.VERIFIED)

        def walked(t: Ticket) -> list[TicketChange]:
            if t.status not in _UNTOUCHED:  # a person took it up meanwhile: theirs now
                return []
            made: list[TicketChange] = []
            for action in walk[1:] if t.status is TicketStatus.ASSIGNED else walk:
                extra: dict[str, Any] = {}
                if action is TicketAction.RECTIFIED:
                    extra["measures"] = t.measures or "传感器恢复正常 / condition cleared"
                made.append(step(t, action, SYSTEM, now, **said, **extra))
                t = made[-1].ticket
            return made

        self.store.change_many(ticket.id, walked)

    # ------------------------------------------------------------------ the clock

    def tick(self) -> None:
        """Open tickets whose delay has passed; escalate overdue ones."""
        now = self._clock.now()
        with self._lock:
            for trigger in self.store.due_triggers(now):
                alert = Alert.model_validate(trigger.alert)
                rule = self.policy.rule(alert.kind)
                if rule is not None:
                    self._open_or_attach(alert, rule)
                self.store.drop_trigger(trigger.alert_id)
            top = max((s.level for s in self.policy.escalation), default=0)
            if top == 0:
                return
            for ticket in self.store.overdue(now, below_level=top):
                self._change(ticket.id, lambda t: self._escalated(t, now))

    def _escalated(self, ticket: Ticket, now: datetime) -> TicketChange | None:
        level = self.policy.level_at(now - ticket.due_at)
        if not ticket.is_open or level <= ticket.escalation_level:
            return None  # closed or escalated meanwhile (the other process)
        note = (
            f"逾期未整改,升级至第 {level} 级 / overdue since "
            f"{ticket.due_at.isoformat()}: escalated to level {level}"
        )
        return step(
            ticket,
            TicketAction.ESCALATED,
            SYSTEM,
            now,
            note=note,
            escalation_level=level,
            listed_supervision=level >= MAX_ESCALATION_LEVEL,
        )

    # ------------------------------------------------------------------ people

    def create(
        self,
        *,
        actor: str,
        source: TicketSource,
        institution: str,
        category: str,
        title: str,
        due_at: datetime,
        description: str = "",
        device: str | None = None,
        severity: Severity = Severity.MAJOR,
        major_hazard: bool = False,
        responsible_unit: str | None = None,
        responsible_person: str | None = None,
        responsible_phone: str | None = None,
        measures: str = "",
        verification_required: bool = True,
        found_at: datetime | None = None,
        note: str | None = None,
        evidence: list[Evidence] | None = None,
    ) -> Ticket:
        """A ticket from another channel (self-inspection, supervision, public report).

        InvalidInputError if its times are outside the policy's bounds (`reported`).
        """
        now = self._clock.now()
        found_at = found_at or now
        self._check_times(now, found_at, due_at)
        institution_row = self._institutions(institution)
        if institution_row is None:
            raise NotFoundError(f"no institution {institution!r}")
        person = institution_row.safety_manager or institution_row.principal
        ticket = Ticket(
            id=new_id(),
            category=category,
            status=TicketStatus.OPEN,
            source=source,
            institution=institution,
            device=device,
            title=title,
            description=description,
            severity=severity,
            major_hazard=major_hazard,
            responsible_unit=responsible_unit or institution_row.name,
            responsible_person=responsible_person or (person.name if person else UNASSIGNED),
            responsible_phone=responsible_phone or (person.phone if person else None),
            measures=measures,
            verification_required=verification_required,
            found_at=found_at,
            due_at=due_at,
            created_at=now,
            updated_at=now,
            reported_by=actor,
        )
        event = TicketEvent(
            at=now,
            action=TicketAction.OPENED,
            actor=actor,
            note=note,
            status=TicketStatus.OPEN,
            evidence=evidence or [],
        )
        change = TicketChange(ticket=ticket, event=event)
        with self._lock:
            try:
                self.store.create(change)
            except DuplicateTicketError:
                raise InvalidTransitionError(
                    f"device {device} has an open {category} ticket already"
                ) from None
        return ticket

    def _check_times(self, now: datetime, found_at: datetime, due_at: datetime) -> None:
        bounds = self.policy.reported
        if found_at > now + bounds.clock_skew:
            raise InvalidInputError(f"found_at {found_at.isoformat()} is in the future")
        if found_at < now - bounds.oldest_found:
            raise InvalidInputError(
                f"found_at {found_at.isoformat()} is more than {bounds.oldest_found.days} days "
                "back: a hazard is reported when it is found"
            )
        if due_at <= found_at:
            raise InvalidInputError("due_at must come after found_at")
        if due_at > now + bounds.longest_deadline:
            raise InvalidInputError(
                f"due_at may be at most {bounds.longest_deadline.days} days ahead "
                "(the policy's longest deadline)"
            )

    def act(
        self,
        ticket_id: str,
        action: TicketAction,
        actor: str,
        *,
        note: str | None = None,
        evidence: list[Evidence] | None = None,
        **changes: Any,
    ) -> Ticket:
        """A person's step; InvalidTransitionError if the loop does not allow it."""
        with self._lock:
            change = self._change(
                ticket_id,
                lambda t: step(
                    t, action, actor, self._clock.now(), note=note, evidence=evidence, **changes
                ),
            )
            assert change is not None
            if action is TicketAction.RECTIFIED and not change.ticket.verification_required:
                # No on-site verification for this category: the report closes it out.
                closed = self._change(
                    ticket_id,
                    lambda t: step(
                        t,
                        TicketAction.VERIFIED,
                        SYSTEM,
                        self._clock.now(),
                        note="无需现场核查 / no on-site verification required",
                    ),
                )
                change = closed or change
            return change.ticket

    # ------------------------------------------------------------------ common

    def _change(
        self,
        ticket_id: str,
        make: Callable[[Ticket], TicketChange | None],
        new_alert: str | None = None,
    ) -> TicketChange | None:
        return self.store.change(ticket_id, make, new_alert)

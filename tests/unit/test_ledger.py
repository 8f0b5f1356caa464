"""The ledger on a fake clock and SQLite: tickets from alerts by policy, the loop, escalation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

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
from core.clock import FakeClock
from core.db import make_engine, upgrade
from core.errors import InvalidTransitionError, NotFoundError
from core.registry.models import Institution, InstitutionType, Person
from tickets.ledger import Ledger
from tickets.models import Ticket, TicketAction, TicketChange, TicketSource, TicketStatus
from tickets.policy import load_policy
from tickets.store import TicketQuery, TicketStore

INSTITUTION = Institution(
    id="inst-1",
    name="阳光养老院",
    type=InstitutionType.ELDERLY_CARE,
    town="城关镇",
    principal=Person(name="张三", phone="13800000001"),
    safety_manager=Person(name="李四", phone="13800000002"),
)
S, A = TicketStatus, TicketAction


class Desk:
    """A ledger with the shipped policy, and the alerts it has been told of."""

    def __init__(self, tmp: Path, clock: FakeClock | None = None, db: str = "ledger") -> None:
        url = f"sqlite:///{tmp / f'{db}.sqlite'}"
        upgrade(url)
        self.clock = clock or FakeClock()
        self.store = TicketStore(make_engine(url))
        self.states: dict[str, AlertState] = {}
        self.ledger = Ledger(
            self.store,
            load_policy(),
            {"inst-1": INSTITUTION}.get,
            self.clock,
            alert_state=self.states.get,
        )
        self.changes: list[TicketChange] = []
        self.ledger.add_listener(self.changes.append)

    def alert(self, kind: AlertKind, device: str = "smoke-1", **fields: Any) -> Alert:
        now = self.clock.now()
        values: dict[str, Any] = {
            "id": new_id(),
            "kind": kind,
            "severity": Severity.MAJOR,
            "state": AlertState.ACTIVE,
            "institution": "inst-1",
            "device": device,
            "raised_at": now,
            "updated_at": now,
            "last_seen_at": now,
            "detail": f"{kind} detail",
        }
        return Alert(**(values | fields))

    def tell(self, alert: Alert, action: AlertAction = AlertAction.RAISED, **update: Any) -> Alert:
        alert = alert.model_copy(update={"updated_at": self.clock.now(), **update})
        self.states[alert.id] = alert.state
        self.ledger.on_alert(AlertChange(alert=alert, action=action, at=self.clock.now()))
        return alert

    def clear(self, alert: Alert) -> Alert:
        return self.tell(alert, AlertAction.CLEARED, state=AlertState.CLEARED)

    def tickets(self, **query: Any) -> list[Ticket]:
        return self.store.search(TicketQuery(**query))

    def one(self) -> Ticket:
        (ticket,) = self.tickets()
        return ticket

    def trail(self, ticket: Ticket) -> list[tuple[str, str, str]]:
        return [(e.action.value, e.actor, e.status.value) for e in self.store.events(ticket.id)]


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    return Desk(tmp_path)


def test_a_device_fault_opens_a_ticket_at_once_routed_to_maintenance(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.DEVICE_FAULT, code="sensor_fault"))
    ticket = desk.one()
    assert (ticket.category, ticket.status, ticket.source) == (
        "device_fault",
        S.OPEN,
        TicketSource.SENSOR,
    )
    assert (ticket.responsible_unit, ticket.responsible_person) == (
        "消防设施维保单位",
        "维保负责人",
    )
    assert ticket.due_at == desk.clock.now() + timedelta(hours=72)
    assert ticket.alert_ids == [alert.id] and ticket.device == "smoke-1"
    assert (
        ticket.title.startswith("火灾探测报警器故障")
        and "device_fault detail" in ticket.description
    )
    assert desk.trail(ticket) == [("opened", SYSTEM, "open")]
    assert [c.event.action for c in desk.changes] == [A.OPENED]


def test_repeated_alerts_attach_to_the_one_open_ticket(desk: Desk) -> None:
    first = desk.tell(desk.alert(AlertKind.DEVICE_FAULT, code="sensor_fault"))
    desk.clock.advance(60)
    second = desk.tell(desk.alert(AlertKind.DEVICE_FAULT, code="chamber_dirty"))
    desk.tell(second)  # the same change again (redelivered): nothing new
    desk.tell(second, AlertAction.SEVERITY)
    ticket = desk.one()
    assert ticket.occurrences == 2 and ticket.alert_ids == [first.id, second.id]
    assert [a for a, _, _ in desk.trail(ticket)] == ["opened", "attached"]
    other = desk.tell(desk.alert(AlertKind.DEVICE_FAULT, device="smoke-2"))
    assert len(desk.tickets()) == 2 and desk.tickets(device="smoke-2")[0].alert_ids == [other.id]


def test_smoke_alarms_open_no_ticket(desk: Desk) -> None:
    desk.tell(desk.alert(AlertKind.SMOKE_ALARM, severity=Severity.CRITICAL))
    assert desk.tickets() == []


def test_a_low_battery_that_clears_untouched_closes_itself_with_evidence(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.LOW_BATTERY, severity=Severity.MINOR))
    ticket = desk.one()
    assert (ticket.responsible_unit, ticket.responsible_person, ticket.responsible_phone) == (
        "阳光养老院",
        "李四",
        "13800000002",
    )
    assert ticket.due_at == desk.clock.now() + timedelta(days=7)
    desk.clock.advance(3600)
    desk.clear(alert)
    ticket = desk.one()
    assert ticket.status is S.CLOSED and ticket.closed_at == desk.clock.now()
    assert desk.trail(ticket) == [
        ("opened", SYSTEM, "open"),
        ("assigned", SYSTEM, "assigned"),
        ("started", SYSTEM, "rectifying"),
        ("rectified", SYSTEM, "awaiting_verification"),
        ("verified", SYSTEM, "closed"),
    ]
    assert all(e.evidence for e in desk.store.events(ticket.id)[1:])


def test_a_cleared_gas_leak_waits_for_a_person_to_verify(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.GAS_LEAK, severity=Severity.CRITICAL))
    ticket = desk.one()
    assert ticket.major_hazard and ticket.due_at == desk.clock.now() + timedelta(hours=24)
    desk.clear(alert)
    ticket = desk.one()
    assert ticket.status is S.AWAITING_VERIFICATION and ticket.rectified_by == SYSTEM
    closed = desk.ledger.act(ticket.id, A.VERIFIED, "zhao", note="现场核查无泄漏")
    assert closed.status is S.CLOSED and closed.verified_by == "zhao"


def test_a_cleared_fault_with_another_fault_active_only_records_it(desk: Desk) -> None:
    first = desk.tell(desk.alert(AlertKind.DEVICE_FAULT, code="sensor_fault"))
    desk.tell(desk.alert(AlertKind.DEVICE_FAULT, code="chamber_dirty"))
    desk.clear(first)
    ticket = desk.one()
    assert ticket.status is S.OPEN
    assert [a for a, _, _ in desk.trail(ticket)] == ["opened", "attached", "cleared"]


def test_work_begun_is_not_undone_by_the_sensor(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.LOW_BATTERY, severity=Severity.MINOR))
    ticket = desk.one()
    desk.ledger.act(ticket.id, A.ASSIGNED, "duty")
    desk.ledger.act(ticket.id, A.STARTED, "wang")
    desk.clear(alert)
    assert desk.one().status is S.RECTIFYING
    assert desk.trail(desk.one())[-1] == ("cleared", SYSTEM, "rectifying")


def test_offline_becomes_a_ticket_only_after_30_minutes_still_open(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.DEVICE_OFFLINE))
    desk.clock.advance(29 * 60)
    desk.ledger.tick()
    assert desk.tickets() == []
    desk.clock.advance(60)
    desk.ledger.tick()
    ticket = desk.one()
    assert ticket.alert_ids == [alert.id] and ticket.category == "device_offline"
    assert ticket.found_at == alert.raised_at, "found when the alert was raised"
    desk.ledger.tick()
    assert len(desk.tickets()) == 1


def test_offline_that_recovers_within_the_delay_never_becomes_a_ticket(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.DEVICE_OFFLINE))
    desk.clock.advance(10 * 60)
    desk.clear(alert)
    desk.clock.advance(60 * 60)
    desk.ledger.tick()
    assert desk.tickets() == []
    # Silent again: the 30 minutes count from then.
    desk.tell(alert, AlertAction.REACTIVATED, state=AlertState.ACTIVE)
    desk.clock.advance(29 * 60)
    desk.ledger.tick()
    assert desk.tickets() == []
    desk.clock.advance(60)
    desk.ledger.tick()
    assert len(desk.tickets()) == 1


def test_overdue_tickets_escalate_level_by_level_to_listed_supervision(desk: Desk) -> None:
    desk.tell(desk.alert(AlertKind.TAMPER))
    ticket = desk.one()
    desk.clock.advance(72 * 3600 - 1)
    desk.ledger.tick()
    assert desk.one().escalation_level == 0
    desk.clock.advance(2)
    desk.ledger.tick()
    assert desk.one().escalation_level == 1
    desk.ledger.tick()
    desk.clock.advance(72 * 3600)
    desk.ledger.tick()
    assert desk.one().escalation_level == 2 and not desk.one().listed_supervision
    desk.clock.advance(4 * 86400)
    desk.ledger.tick()
    top = desk.one()
    assert top.escalation_level == 3 and top.listed_supervision
    assert [a for a, _, _ in desk.trail(ticket)].count("escalated") == 3


def test_a_closed_ticket_does_not_escalate(desk: Desk) -> None:
    ticket = desk.ledger.create(
        actor="inspector",
        source=TicketSource.SUPERVISORY_INSPECTION,
        institution="inst-1",
        category="fire_exit",
        title="安全出口堵塞",
        due_at=desk.clock.now() + timedelta(days=1),
        verification_required=False,
    )
    desk.ledger.act(ticket.id, A.ASSIGNED, "duty")
    desk.ledger.act(ticket.id, A.STARTED, "wang")
    closed = desk.ledger.act(ticket.id, A.RECTIFIED, "wang", measures="清理通道")
    assert closed.status is S.CLOSED, "no verification required: the report closes it"
    assert closed.verified_by == SYSTEM
    desk.clock.advance(30 * 86400)
    desk.ledger.tick()
    assert desk.store.get(ticket.id) == closed


def test_tickets_from_other_channels_take_the_same_fields(desk: Desk) -> None:
    found = desk.clock.now() - timedelta(days=2)
    ticket = desk.ledger.create(
        actor="public-desk",
        source=TicketSource.PUBLIC_REPORT,
        institution="inst-1",
        category="electrical",
        title="私拉电线",
        description="三楼走廊私拉电线,群众举报查实",
        due_at=desk.clock.now() + timedelta(days=3),
        found_at=found,
        major_hazard=True,
    )
    stored = desk.store.get(ticket.id)
    assert stored == ticket
    assert (stored.source, stored.found_at, stored.reported_by) == (
        TicketSource.PUBLIC_REPORT,
        found,
        "public-desk",
    )
    assert (stored.responsible_unit, stored.responsible_person) == ("阳光养老院", "李四")
    with pytest.raises(NotFoundError):
        desk.ledger.create(
            actor="x",
            source=TicketSource.SELF_INSPECTION,
            institution="nowhere",
            category="c",
            title="t",
            due_at=desk.clock.now(),
        )


def test_steps_the_loop_does_not_allow_are_refused_and_not_stored(desk: Desk) -> None:
    desk.tell(desk.alert(AlertKind.TAMPER))
    ticket = desk.one()
    with pytest.raises(InvalidTransitionError, match="is open: cannot be verified"):
        desk.ledger.act(ticket.id, A.VERIFIED, "zhao")
    desk.ledger.act(ticket.id, A.ASSIGNED, "duty")
    desk.ledger.act(ticket.id, A.STARTED, "wang")
    desk.ledger.act(ticket.id, A.RECTIFIED, "wang")
    with pytest.raises(InvalidTransitionError, match="cannot also verify"):
        desk.ledger.act(ticket.id, A.VERIFIED, "wang")
    assert desk.one().status is S.AWAITING_VERIFICATION
    assert len(desk.trail(ticket)) == 4
    with pytest.raises(NotFoundError):
        desk.ledger.act("nope", A.ASSIGNED, "duty")


def test_two_ledgers_on_one_database_open_one_ticket_per_alert(tmp_path: Path) -> None:
    clock = FakeClock()
    one, two = Desk(tmp_path, clock, "shared"), Desk(tmp_path, clock, "shared")
    alert = one.alert(AlertKind.DEVICE_FAULT, code="sensor_fault")
    one.tell(alert)
    two.tell(alert)  # the other process handles the same alert
    later = one.alert(AlertKind.DEVICE_FAULT, code="comm_fault")
    two.tell(later)
    one.tell(later)
    (ticket,) = one.tickets()
    assert ticket.alert_ids == [alert.id, later.id] and ticket.occurrences == 2


def test_a_closed_sensor_ticket_frees_its_device_for_the_next_one(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.LOW_BATTERY, severity=Severity.MINOR))
    desk.clear(alert)
    again = desk.tell(desk.alert(AlertKind.LOW_BATTERY, severity=Severity.MINOR))
    closed = desk.tickets(statuses=["closed"])
    (opened,) = desk.tickets(statuses=["open"])
    assert closed[0].alert_ids == [alert.id] and opened.alert_ids == [again.id]


# --- catching up with missed alert changes --------------------------------------------------


def test_an_alert_whose_change_was_missed_gets_its_ticket_when_the_ledger_catches_up(
    desk: Desk,
) -> None:
    missed = desk.alert(AlertKind.DEVICE_FAULT, code="sensor_fault")
    desk.states[missed.id] = missed.state  # stored by the alerts, never handled by the ledger
    smoke = desk.alert(AlertKind.SMOKE_ALARM, device="smoke-9")  # no rule: no ticket
    assert desk.ledger.reconcile([missed, smoke]) == 1
    ticket = desk.one()
    assert ticket.alert_ids == [missed.id] and ticket.category == "device_fault"
    assert desk.ledger.reconcile([missed, smoke]) == 0, "idempotent"
    desk.tell(missed)  # the change arrives after all: nothing twice
    assert desk.one().occurrences == 1 and len(desk.changes) == 1


def test_a_missed_offline_alert_waits_out_its_delay_from_when_it_was_raised(desk: Desk) -> None:
    missed = desk.alert(AlertKind.DEVICE_OFFLINE)
    desk.states[missed.id] = missed.state
    desk.clock.advance(20 * 60)
    assert desk.ledger.reconcile([missed]) == 1  # a trigger, due 30 min after raising
    desk.clock.advance(9 * 60)
    desk.ledger.tick()
    assert desk.tickets() == []
    desk.clock.advance(60)
    desk.ledger.tick()
    assert desk.one().alert_ids == [missed.id]


def test_a_trigger_whose_clearing_was_missed_is_dropped(desk: Desk) -> None:
    alert = desk.tell(desk.alert(AlertKind.DEVICE_OFFLINE))
    desk.states[alert.id] = AlertState.CLEARED  # back online; the change was missed
    assert desk.ledger.reconcile([]) == 1
    desk.clock.advance(31 * 60)
    desk.ledger.tick()
    assert desk.tickets() == []


def test_a_missed_clearing_walks_the_untouched_ticket_as_the_clearing_would(
    tmp_path: Path,
) -> None:
    told, missed = Desk(tmp_path, db="told"), Desk(tmp_path, db="missed")
    for desk in (told, missed):
        alert = desk.tell(desk.alert(AlertKind.LOW_BATTERY, severity=Severity.MINOR))
        desk.clock.advance(3600)
        if desk is told:
            desk.clear(alert)
        else:
            desk.states[alert.id] = AlertState.CLEARED
            assert desk.ledger.reconcile([]) == 1
            assert desk.ledger.reconcile([]) == 0, "done once"
    assert missed.trail(missed.one()) == told.trail(told.one())
    assert missed.one().status is S.CLOSED


def test_catching_up_changes_nothing_without_evidence(desk: Desk) -> None:
    fault = desk.tell(desk.alert(AlertKind.DEVICE_FAULT))
    kept = desk.tell(desk.alert(AlertKind.FIRE_CONFIRMED, device="smoke-2"))
    desk.states[kept.id] = AlertState.CLEARED
    desk.clear(kept)  # recorded: `keep` leaves the ticket open with the clearing noted
    del desk.states[fault.id]  # the alert is not known: no evidence that it cleared
    before = {t.id: desk.trail(t) for t in desk.tickets()}
    assert desk.ledger.reconcile([]) == 0
    assert {t.id: desk.trail(t) for t in desk.tickets()} == before

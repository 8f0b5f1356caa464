"""The ledger on a fake clock and SQLite: tickets from alerts by policy, the loop, escalation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerts.events import to_event
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
from core.errors import ConfigError, InvalidInputError, InvalidTransitionError, NotFoundError
from core.eventlog import JournalEventLog, NewEvent
from core.registry.models import Institution, InstitutionType, Person
from tickets.consumer import LedgerConsumer
from tickets.ledger import Ledger
from tickets.models import Ticket, TicketAction, TicketSource, TicketStatus
from tickets.policy import load_policy
from tickets.relay import TicketRelay
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
        self.ledger = Ledger(self.store, load_policy(), {"inst-1": INSTITUTION}.get, self.clock)

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
    (event,) = desk.store.pending_events()  # for the event log, written with the change
    assert (event["action"], event["ticket"]["id"], event["alert_id"]) == (
        "opened",
        ticket.id,
        alert.id,
    )
    assert event["notify"] is True and event["event_id"] > 0


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
            due_at=desk.clock.now() + timedelta(days=1),
        )


@pytest.mark.parametrize(
    ("found", "due", "message"),
    [
        (timedelta(minutes=10), timedelta(days=1), "in the future"),
        (timedelta(days=-40), timedelta(days=1), "more than 31 days back"),
        (timedelta(0), timedelta(days=181), "at most 180 days ahead"),
        (timedelta(days=-1), timedelta(days=-2), "after found_at"),
        (timedelta(0), timedelta(0), "after found_at"),
    ],
)
def test_a_reported_hazard_keeps_to_the_policy_times(
    desk: Desk, found: timedelta, due: timedelta, message: str
) -> None:
    """A tenant cannot give its own hazard a deadline years ahead or date it in the future."""
    now = desk.clock.now()
    with pytest.raises(InvalidInputError, match=message):
        desk.ledger.create(
            actor="wu",
            source=TicketSource.SELF_INSPECTION,
            institution="inst-1",
            category="escape_route_blocked",
            title="疏散通道堵塞",
            found_at=now + found,
            due_at=now + due,
        )
    assert desk.store.search(TicketQuery()) == [], "nothing stored"
    within = desk.ledger.create(  # the bounds themselves are allowed
        actor="wu",
        source=TicketSource.SELF_INSPECTION,
        institution="inst-1",
        category="escape_route_blocked",
        title="疏散通道堵塞",
        found_at=now - timedelta(days=31) + timedelta(minutes=5),
        due_at=now + timedelta(days=180),
    )
    assert within.due_at == now + timedelta(days=180)


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


# --- the ledger on the event log ---------------------------------------------------------------


def _log_of(desk: Desk, tmp_path: Path, changes: list[AlertChange]) -> JournalEventLog:
    log = JournalEventLog(tmp_path / "events", fsync=False)
    log.append([to_event(c.alert.device, c) for c in changes])
    return log


def test_alert_events_replayed_after_a_crash_change_nothing(desk: Desk, tmp_path: Path) -> None:
    fault = desk.alert(AlertKind.DEVICE_FAULT, code="sensor_fault")
    now = desk.clock.now()
    changes = [
        AlertChange(alert=fault, action=AlertAction.RAISED, at=now),
        AlertChange(alert=fault, action=AlertAction.REPEATED, at=now),
        AlertChange(alert=desk.alert(AlertKind.SMOKE_ALARM), action=AlertAction.RAISED, at=now),
    ]
    log = _log_of(desk, tmp_path, changes)
    consumer = LedgerConsumer(desk.ledger, desk.store.engine)
    consumer.load()
    assert consumer.position == 0
    events = log.cursor(0).next_batch(10)
    consumer.handle(events)
    assert consumer.position == 3
    before = (desk.tickets(), [desk.trail(t) for t in desk.tickets()], desk.store.pending_events())
    again = LedgerConsumer(desk.ledger, desk.store.engine)
    again.load()
    assert again.position == 3, "the position is kept in the database"
    again.handle(events)  # as if the process died before storing the position
    after = (desk.tickets(), [desk.trail(t) for t in desk.tickets()], desk.store.pending_events())
    assert after == before
    assert len(desk.tickets()) == 1 and desk.one().alert_ids == [fault.id]


def test_a_ticket_stays_open_while_another_of_its_alerts_holds(desk: Desk) -> None:
    first = desk.tell(desk.alert(AlertKind.DEVICE_FAULT, code="sensor_fault"))
    second = desk.tell(desk.alert(AlertKind.DEVICE_FAULT, code="comm_fault"))
    desk.clear(first)  # the other condition is still there (as the log last said)
    assert desk.one().status is S.OPEN
    assert [a for a, _, _ in desk.trail(desk.one())] == ["opened", "attached", "cleared"]
    desk.tell(second, AlertAction.ACKNOWLEDGED, state=AlertState.ACKNOWLEDGED)
    assert desk.store.alert_states([first.id, second.id]) == {
        first.id: "cleared",
        second.id: "acknowledged",
    }
    desk.tell(second, AlertAction.RESOLVED, state=AlertState.RESOLVED, resolved_by=SYSTEM)
    assert desk.one().status is S.AWAITING_VERIFICATION, "both gone: the system walks the loop"


def test_the_relay_moves_ticket_changes_to_the_log_in_order_once(
    desk: Desk, tmp_path: Path
) -> None:
    log = JournalEventLog(tmp_path / "events", fsync=False)
    relay = TicketRelay(desk.store.engine, log)
    woken: list[bool] = []
    desk.store.after_commit = lambda: woken.append(True)
    alert = desk.tell(desk.alert(AlertKind.TAMPER))
    ticket = desk.one()
    desk.ledger.act(ticket.id, A.ASSIGNED, "duty")
    assert len(woken) == 2, "each commit wakes the relay"
    assert relay.relay() == 2
    assert relay.relay() == 0, "moved once: the outbox is empty"
    assert desk.store.pending_events() == []
    events = log.cursor(0).next_batch(10)
    assert [(e.kind, e.subject, e.institution) for e in events] == [
        ("ticket", ticket.id, "inst-1"),
        ("ticket", ticket.id, "inst-1"),
    ]
    bodies = [e.body() for e in events]
    assert [b["action"] for b in bodies] == ["opened", "assigned"]
    assert bodies[0]["alert_id"] == alert.id and bodies[1]["ticket"]["status"] == "assigned"
    assert bodies[0]["event_id"] < bodies[1]["event_id"]
    assert [b["notify"] for b in bodies] == [True, False], "assignments are not sent out"


def test_changes_appended_before_a_crash_are_not_appended_again(desk: Desk, tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path / "events", fsync=False)
    desk.tell(desk.alert(AlertKind.TAMPER))
    desk.ledger.act(desk.one().id, A.ASSIGNED, "duty")
    waiting = desk.store.pending_events()
    # The relay appended them, and the process died before it could delete them:
    log.append(
        [
            NewEvent("ticket", body["ticket"]["id"], "inst-1", orjson.dumps(body))
            for body in waiting[:1]
        ]
    )
    log.append(
        [
            to_event(
                "smoke-1",
                AlertChange(
                    alert=desk.alert(AlertKind.SMOKE_ALARM),
                    action=AlertAction.RAISED,
                    at=desk.clock.now(),
                ),
            )
        ]
    )
    relay = TicketRelay(desk.store.engine, log)
    assert relay.recover() == 1, "the first was in the log already"
    assert [e["action"] for e in desk.store.pending_events()] == ["assigned"]
    assert relay.relay() == 1
    actions = [e.body()["action"] for e in log.cursor(0).next_batch(10) if e.kind == "ticket"]
    assert actions == ["opened", "assigned"], "each once"
    assert relay.recover() == 0


def test_a_relay_round_that_failed_after_its_append_is_not_appended_again(
    desk: Desk, tmp_path: Path
) -> None:
    log = JournalEventLog(tmp_path / "events", fsync=False)
    relay = TicketRelay(desk.store.engine, log)
    desk.tell(desk.alert(AlertKind.TAMPER))

    class Refusing(JournalEventLog):
        def append(self, events: Any) -> int:
            log.append(events)  # appended ...
            raise OSError("... and then the commit is refused")

    failing = TicketRelay(desk.store.engine, Refusing(tmp_path / "other", fsync=False))
    with pytest.raises(OSError):
        failing.relay()
    assert len(desk.store.pending_events()) == 1, "the row stays: it may not be in the log"
    relay._unsure = failing._unsure  # the same relay, next round
    assert relay.relay() == 0, "the row's event is in the log already: deleted, not appended"
    assert desk.store.pending_events() == []
    actions = [e.body()["action"] for e in log.cursor(0).next_batch(10)]
    assert actions == ["opened"], "once"


def test_a_failed_alert_change_is_handled_again_and_a_replay_changes_nothing(
    desk: Desk, tmp_path: Path
) -> None:
    battery = desk.alert(AlertKind.LOW_BATTERY, severity=Severity.MINOR)
    now = desk.clock.now()
    raised = AlertChange(alert=battery, action=AlertAction.RAISED, at=now)
    cleared_alert = battery.model_copy(update={"state": AlertState.CLEARED})
    cleared = AlertChange(alert=cleared_alert, action=AlertAction.CLEARED, at=now)
    log = _log_of(desk, tmp_path, [raised, cleared])
    consumer = LedgerConsumer(desk.ledger, desk.store.engine)
    consumer.load()
    real = desk.ledger.on_alert
    calls: list[AlertAction] = []

    def flaky(change: AlertChange) -> None:
        calls.append(change.action)
        if change.action is AlertAction.CLEARED and len(calls) == 2:
            raise OSError("the database went away")
        real(change)

    desk.ledger.on_alert = flaky  # type: ignore[method-assign]
    events = log.cursor(0).next_batch(10)
    with pytest.raises(OSError):
        consumer.handle(events)
    assert consumer.position == 1, "the raise is done, the clearing is not"
    consumer.handle(events[1:])
    assert consumer.position == 2
    trail = [a for a, _, _ in desk.trail(desk.one())]
    consumer.handle(events)  # read once more (a crash before the position was stored)
    desk.ledger.on_alert = real  # type: ignore[method-assign]
    assert [a for a, _, _ in desk.trail(desk.one())] == trail, "nothing twice"
    assert desk.one().status is S.CLOSED and trail.count("verified") == 1


def test_a_policy_cannot_waive_verification_of_a_major_hazard(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rules:\n  gas_leak: {category: gas_leak, title_zh: 燃气泄漏, title_en: Gas leak,"
        " severity: critical, major_hazard: true, deadline: 24h, verification: false}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="a major hazard is always verified on site"):
        load_policy(policy)
    assert load_policy().reported.longest_deadline == timedelta(days=180), "shipped bounds"

"""The closed loop: every allowed step, every refused one, and who may verify."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.alerting import SYSTEM, AlertKind, Severity
from core.errors import ConfigError, InvalidTransitionError
from tickets.lifecycle import NOTES, TRANSITIONS, step
from tickets.models import Ticket, TicketAction, TicketSource, TicketStatus
from tickets.policy import Policy, load_policy

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
S, A = TicketStatus, TicketAction


def ticket(status: TicketStatus = S.OPEN, **fields: Any) -> Ticket:
    values: dict[str, Any] = {
        "id": "t1",
        "category": "device_fault",
        "status": status,
        "source": TicketSource.SENSOR,
        "institution": "inst-1",
        "device": "smoke-1",
        "title": "探测器故障",
        "severity": Severity.MAJOR,
        "responsible_unit": "阳光养老院",
        "responsible_person": "李四",
        "found_at": AT,
        "due_at": AT + timedelta(hours=72),
        "created_at": AT,
        "updated_at": AT,
        "reported_by": SYSTEM,
    }
    return Ticket(**(values | fields))


def test_the_whole_loop_records_who_did_each_step() -> None:
    t = ticket()
    later = itertools.count(1)

    def at() -> datetime:
        return AT + timedelta(hours=next(later))

    t = step(t, A.ASSIGNED, "duty", at(), responsible_person="王五").ticket
    assert (t.status, t.responsible_person) == (S.ASSIGNED, "王五")
    t = step(t, A.STARTED, "wang", at()).ticket
    change = step(t, A.RECTIFIED, "wang", at(), note="更换探测器", measures="更换探测器")
    t = change.ticket
    assert (t.status, t.rectified_by, t.measures) == (S.AWAITING_VERIFICATION, "wang", "更换探测器")
    assert change.event.note == "更换探测器" and change.event.actor == "wang"
    change = step(t, A.VERIFIED, "zhao", at(), note="现场核查合格")
    t = change.ticket
    assert (t.status, t.verified_by, t.closed_at) == (S.CLOSED, "zhao", AT + timedelta(hours=4))
    assert change.event.status is S.CLOSED
    t = step(t, A.REOPENED, "zhao", at(), note="复发").ticket
    assert (t.status, t.closed_at, t.verified_by, t.rectified_by) == (S.OPEN, None, None, None)


def test_failed_verification_goes_back_to_rectifying() -> None:
    t = ticket(S.AWAITING_VERIFICATION, rectified_by="wang")
    t = step(t, A.REJECTED, "zhao", AT, note="仍有故障").ticket
    assert t.status is S.RECTIFYING


@pytest.mark.parametrize("action", [A.VERIFIED, A.REJECTED])
def test_the_rectifier_cannot_verify_their_own_work(action: TicketAction) -> None:
    t = ticket(S.AWAITING_VERIFICATION, rectified_by="wang")
    with pytest.raises(InvalidTransitionError, match="wang reported the rectification"):
        step(t, action, "wang", AT)


def test_the_system_may_close_what_the_sensor_showed_cleared() -> None:
    t = ticket(S.AWAITING_VERIFICATION, rectified_by=SYSTEM)
    assert step(t, A.VERIFIED, SYSTEM, AT).ticket.status is S.CLOSED


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (status, action)
        for status in TicketStatus
        for action in TicketAction
        if action not in NOTES and (status, action) not in TRANSITIONS and action != A.OPENED
    ],
)
def test_every_other_step_is_refused(status: TicketStatus, action: TicketAction) -> None:
    with pytest.raises(InvalidTransitionError, match=f"is {status}: cannot be {action}"):
        step(ticket(status, rectified_by="wang"), action, "zhao", AT)


def test_the_allowed_steps_are_those_of_the_contract() -> None:
    assert {(s.value, a.value, t.value) for (s, a), t in TRANSITIONS.items()} == {
        ("open", "assigned", "assigned"),
        ("assigned", "assigned", "assigned"),
        ("assigned", "started", "rectifying"),
        ("rectifying", "rectified", "awaiting_verification"),
        ("awaiting_verification", "verified", "closed"),
        ("awaiting_verification", "rejected", "rectifying"),
        ("closed", "reopened", "open"),
    }


def test_notes_keep_the_status_and_a_closed_ticket_takes_only_comments() -> None:
    t = ticket(S.RECTIFYING)
    for action in (A.COMMENTED, A.CLEARED, A.ATTACHED, A.ESCALATED):
        assert step(t, action, SYSTEM, AT).ticket.status is S.RECTIFYING
    closed = ticket(S.CLOSED)
    assert step(closed, A.COMMENTED, "zhao", AT).ticket.status is S.CLOSED
    with pytest.raises(InvalidTransitionError, match="closed"):
        step(closed, A.ESCALATED, SYSTEM, AT)


# ---------------------------------------------------------------------- policy


def test_the_shipped_policy_says_what_the_issue_asks() -> None:
    policy = load_policy()
    offline = policy.rule(AlertKind.DEVICE_OFFLINE)
    assert offline is not None and offline.delay == timedelta(minutes=30)
    battery = policy.rule(AlertKind.LOW_BATTERY)
    assert battery is not None and (battery.delay, battery.deadline) == (
        timedelta(0),
        timedelta(days=7),
    )
    gas = policy.rule(AlertKind.GAS_LEAK)
    assert gas is not None and gas.major_hazard and gas.deadline == timedelta(hours=24)
    for kind in (AlertKind.DEVICE_FAULT, AlertKind.TAMPER):
        rule = policy.rule(kind)
        assert rule is not None and rule.deadline == timedelta(hours=72)
    fire = policy.rule(AlertKind.FIRE_CONFIRMED)
    assert fire is not None and fire.category == "incident_review"
    assert policy.rule(AlertKind.SMOKE_ALARM) is None
    fault = policy.rule(AlertKind.DEVICE_FAULT)
    assert fault is not None and fault.route == "maintenance" and "maintenance" in policy.routes


def test_escalation_levels_by_time_past_the_deadline() -> None:
    policy = load_policy()
    assert policy.level_at(timedelta(seconds=-1)) == 0
    assert policy.level_at(timedelta(0)) == 1
    assert policy.level_at(timedelta(hours=71)) == 1
    assert policy.level_at(timedelta(hours=72)) == 2
    assert policy.level_at(timedelta(days=30)) == 3


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rules: {gas_leak: {category: g, title_zh: 燃气, title_en: gas, severity: major,"
            " deadline: soon}}",
            "a duration like 30m",
        ),
        (
            "rules: {flood: {category: f, title_zh: 水, title_en: w, severity: major,"
            " deadline: 1d}}",
            "rules.flood",
        ),
        (
            "rules: {tamper: {category: t, title_zh: 拆, title_en: t, severity: major,"
            " deadline: 1d, route: nowhere}}",
            "route 'nowhere' is not in routes",
        ),
        ("escalation: [{after: 1d, level: 2}, {after: 2d, level: 1}]", "go up one step"),
        ("rules: [", "not YAML"),
        (
            "rules: {tamper: {category: t, title_zh: 拆, title_en: t, severity: major,"
            " deadline: 1d, colour: red}}",
            "colour",
        ),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_policy(write(tmp_path, text))


def test_a_custom_policy_file_replaces_the_defaults(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            "rules:\n  low_battery: {category: battery, title_zh: 电池, title_en: battery,"
            " severity: minor, deadline: 90s}\n",
        )
    )
    assert isinstance(policy, Policy)
    assert list(policy.rules) == [AlertKind.LOW_BATTERY]
    rule = policy.rule(AlertKind.LOW_BATTERY)
    assert rule is not None and rule.deadline == timedelta(seconds=90)
    assert policy.escalation == [] and policy.level_at(timedelta(days=99)) == 0

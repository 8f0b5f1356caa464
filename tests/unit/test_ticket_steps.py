"""The steps the console offers on a ticket: what the status and the role allow, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.permissions import steps_open_to
from core.alerting import Severity
from core.users import Role, User
from tickets.models import Ticket, TicketAction, TicketSource, TicketStatus

A = TicketAction
NOW = datetime(2026, 12, 2, 8, tzinfo=UTC)
ZHAO = User(name="zhao", display_name="赵", role=Role.DUTY_OFFICER)
BOSS = User(name="boss", display_name="局长", role=Role.BUREAU)
LI = User(name="li", display_name="李", role=Role.TOWN_OFFICE, towns=("城关镇",))
WU = User(name="wu", display_name="吴", role=Role.INSTITUTION, institutions=("inst-1",))
WANG = User(name="wang", display_name="王工", role=Role.CONTRACTOR, institutions=("inst-1",))


def ticket(status: TicketStatus, **fields: Any) -> Ticket:
    return Ticket(
        id="t-1",
        category="fire_door_blocked",
        status=status,
        source=TicketSource.SELF_INSPECTION,
        institution="inst-1",
        title="常闭式防火门处于常开状态",
        severity=Severity.MAJOR,
        responsible_unit="阳光养老院",
        responsible_person="吴",
        found_at=NOW,
        due_at=NOW + timedelta(days=3),
        created_at=NOW,
        updated_at=NOW,
        reported_by="wu",
        **fields,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (TicketStatus.OPEN, [A.ASSIGNED, A.COMMENTED]),
        (TicketStatus.ASSIGNED, [A.ASSIGNED, A.STARTED, A.COMMENTED]),
        (TicketStatus.RECTIFYING, [A.RECTIFIED, A.COMMENTED]),
        (TicketStatus.AWAITING_VERIFICATION, [A.VERIFIED, A.REJECTED, A.COMMENTED]),
        (TicketStatus.CLOSED, [A.REOPENED, A.COMMENTED]),
    ],
)
def test_the_status_decides_the_steps(status: TicketStatus, expected: list[A]) -> None:
    assert steps_open_to(ZHAO, ticket(status)) == expected


def test_whoever_reported_the_rectification_is_not_offered_its_verification() -> None:
    done = ticket(TicketStatus.AWAITING_VERIFICATION, rectified_by="zhao")
    assert steps_open_to(ZHAO, done) == [A.COMMENTED]
    assert steps_open_to(WU, ticket(TicketStatus.AWAITING_VERIFICATION)) == [
        A.VERIFIED,
        A.REJECTED,
        A.COMMENTED,
    ]


def test_a_major_hazard_is_verified_by_the_supervising_side_only() -> None:
    major = ticket(TicketStatus.AWAITING_VERIFICATION, major_hazard=True, rectified_by="wang")
    for tenant in (WU, WANG):
        assert steps_open_to(tenant, major) == [A.COMMENTED]
    assert steps_open_to(LI, major) == [A.VERIFIED, A.REJECTED, A.COMMENTED]
    assert steps_open_to(BOSS, major) == [A.VERIFIED, A.REJECTED]  # the bureau only verifies


def test_the_bureau_reads_but_does_not_work_tickets() -> None:
    for status in TicketStatus:
        assert steps_open_to(BOSS, ticket(status)) == []

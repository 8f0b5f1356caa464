"""Who may do what to a ticket, beyond seeing it: the role matrix of docs/access.md.

The supervised party must not run the whole loop on its own hazards: it reports what it finds
itself (self-inspection), never as a supervisory inspection or a public report; it cannot
waive on-site verification; and a major hazard (重大事故隐患) is verified on site by the
supervising side — town office, bureau or duty officer — never by the institution or its
contractor, whatever accounts they hold.
"""

from __future__ import annotations

from core.users import Role, User
from tickets.lifecycle import TRANSITIONS
from tickets.models import Ticket, TicketAction, TicketSource

# The roles that supervise institutions (and may verify their major hazards).
SUPERVISING = frozenset({Role.ADMIN, Role.DUTY_OFFICER, Role.BUREAU, Role.TOWN_OFFICE})

# The sources a role reports hazards as: the source follows the role.
SOURCES: dict[Role, frozenset[TicketSource]] = {
    Role.ADMIN: frozenset(TicketSource) - {TicketSource.SENSOR},
    Role.DUTY_OFFICER: frozenset({TicketSource.SUPERVISORY_INSPECTION, TicketSource.PUBLIC_REPORT}),
    Role.BUREAU: frozenset(),  # reads; its inspections come with the ledger's inspection records
    Role.TOWN_OFFICE: frozenset({TicketSource.SUPERVISORY_INSPECTION, TicketSource.PUBLIC_REPORT}),
    Role.INSTITUTION: frozenset({TicketSource.SELF_INSPECTION}),
    Role.CONTRACTOR: frozenset(),  # tells the institution, which reports
}

VERIFYING = frozenset({TicketAction.VERIFIED, TicketAction.REJECTED})


def may_report(user: User, source: TicketSource) -> str | None:
    """None if the user may report a hazard as `source`; else why not."""
    allowed = SOURCES[user.role]
    if source in allowed:
        return None
    if not allowed:
        return f"a {user.role} user does not report hazards"
    names = ", ".join(sorted(allowed))
    return f"a {user.role} user reports hazards as {names}, not {source}"


def may_waive_verification(user: User) -> str | None:
    """None if the user may report a hazard without on-site verification; else why not."""
    if user.role in SUPERVISING:
        return None
    return "only the supervising side may waive on-site verification"


def may_take(user: User, action: TicketAction, ticket: Ticket) -> str | None:
    """None if the user may take this step on this ticket (seen already); else why not."""
    if action in VERIFYING and ticket.major_hazard:
        if user.role in SUPERVISING:
            return None
        return (
            "a major hazard is verified on site by the supervising side "
            "(town office, bureau or duty officer), not by the institution or its contractor"
        )
    if not user.may_act:
        return f"a {user.role} user cannot change tickets"
    return None


# The steps a person takes through the API, in the order a ticket goes through them.
STEPS = (
    TicketAction.ASSIGNED,
    TicketAction.STARTED,
    TicketAction.RECTIFIED,
    TicketAction.VERIFIED,
    TicketAction.REJECTED,
    TicketAction.REOPENED,
    TicketAction.COMMENTED,
)


def steps_open_to(user: User, ticket: Ticket) -> list[TicketAction]:
    """The steps this user may take on this ticket now (its status allows them, their role
    allows them, and the one who reported the rectification does not also verify it); what the
    console offers. The API checks each step again when it is taken."""
    found = []
    for action in STEPS:
        if may_take(user, action, ticket) is not None:
            continue
        if action is not TicketAction.COMMENTED and (ticket.status, action) not in TRANSITIONS:
            continue
        if action in VERIFYING and ticket.rectified_by == user.name:
            continue
        found.append(action)
    return found

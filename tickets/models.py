"""Hazard tickets as the ledger keeps them (contract section 3: statuses and sources)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from core.alerting import Severity

MAX_ESCALATION_LEVEL = 3  # 1 institution principal, 2 town office, 3 district bureau (挂牌督办)


class TicketStatus(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    RECTIFYING = "rectifying"
    AWAITING_VERIFICATION = "awaiting_verification"
    CLOSED = "closed"


class TicketSource(StrEnum):
    """The channel a hazard came through (渠道)."""

    SENSOR = "sensor"
    SELF_INSPECTION = "self_inspection"  # 自查上报
    SUPERVISORY_INSPECTION = "supervisory_inspection"  # 督导检查发现
    PUBLIC_REPORT = "public_report"  # 群众举报查实


class TicketAction(StrEnum):
    """One step of a ticket's audit trail."""

    OPENED = "opened"
    ATTACHED = "attached"  # another alert of the same device and category
    ASSIGNED = "assigned"
    STARTED = "started"  # rectification begun
    RECTIFIED = "rectified"  # done, waiting for on-site verification
    VERIFIED = "verified"  # verification passed: closed out (销号)
    REJECTED = "rejected"  # verification failed: back to rectifying
    REOPENED = "reopened"
    CLEARED = "cleared"  # the sensor condition went away (evidence, no status change)
    ESCALATED = "escalated"  # overdue: one level up
    COMMENTED = "commented"  # a note or evidence without a change of status


class Evidence(BaseModel):
    """A photo, a report, a reading: a file kept by hazardwatch, or a link."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(max_length=200, description="file name or title")
    url: str | None = Field(default=None, max_length=2000, description="where it is, if a link")
    path: str | None = Field(default=None, description="stored file, relative to the data dir")
    sha256: str | None = Field(default=None, description="of the stored file")
    size: int | None = Field(default=None, ge=0, description="bytes of the stored file")
    content_type: str | None = Field(default=None, max_length=100)


class Ticket(BaseModel):
    """One hazard in the ledger (隐患台账)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="stable id")
    category: str = Field(description="what kind of hazard, from the policy or the reporter")
    status: TicketStatus
    source: TicketSource
    institution: str = Field(description="institution id")
    device: str | None = Field(default=None, description="the device, for sensor tickets")
    title: str = Field(max_length=200, description="short hazard description (隐患描述)")
    description: str = Field(default="", max_length=5000, description="what was found")
    severity: Severity = Field(description="critical, major, minor or warning")
    major_hazard: bool = Field(default=False, description="重大事故隐患")
    responsible_unit: str = Field(max_length=200, description="整改责任单位")
    responsible_person: str = Field(max_length=100, description="责任人")
    responsible_phone: str | None = Field(default=None, max_length=40)
    measures: str = Field(default="", max_length=5000, description="整改措施")
    verification_required: bool = Field(default=True, description="on-site verification")
    found_at: datetime = Field(description="when the hazard was found (发现时间)")
    due_at: datetime = Field(description="rectification deadline (整改时限)")
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = Field(default=None, description="销号时间")
    rectified_by: str | None = Field(default=None, description="who reported it rectified")
    verified_by: str | None = None
    reported_by: str = Field(description="who created it (system for sensors)")
    occurrences: int = Field(default=1, description="alerts attached")
    alert_ids: list[str] = Field(default_factory=list, description="the alerts behind it")
    escalation_level: int = Field(default=0, ge=0, le=MAX_ESCALATION_LEVEL)
    listed_supervision: bool = Field(default=False, description="挂牌督办: at the top level")

    @property
    def is_open(self) -> bool:
        """Not closed out."""
        return self.status is not TicketStatus.CLOSED


class TicketEvent(BaseModel):
    """One line of the audit trail: who did what, when, why, with what evidence."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    action: TicketAction
    actor: str
    note: str | None = None
    status: TicketStatus = Field(description="status after the step")
    evidence: list[Evidence] = Field(default_factory=list)
    alert_id: str | None = None


class TicketChange(BaseModel):
    """A ticket after a step, and the step."""

    model_config = ConfigDict(frozen=True)

    ticket: Ticket
    event: TicketEvent

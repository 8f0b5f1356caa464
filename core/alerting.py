"""Alerts as other stages and programs see them (contract section 3)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field


class AlertKind(StrEnum):
    SMOKE_ALARM = "smoke_alarm"
    FIRE_CONFIRMED = "fire_confirmed"
    GAS_LEAK = "gas_leak"
    CO_ALARM = "co_alarm"
    DEVICE_OFFLINE = "device_offline"
    LOW_BATTERY = "low_battery"
    DEVICE_FAULT = "device_fault"
    TAMPER = "tamper"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"

    @property
    def rank(self) -> int:
        """Higher is more severe."""
        return _RANK[self]


_RANK = {Severity.WARNING: 0, Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}


class AlertState(StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"  # condition gone before anyone acknowledged: stays on the board
    RESOLVED = "resolved"


class AlertAction(StrEnum):
    """What happened to an alert; each is one line of its history."""

    RAISED = "raised"
    REPEATED = "repeated"  # the condition was seen again: count, last value, last time
    SEVERITY = "severity"  # moved up or down (gas level 1 <-> 2)
    CLEARED = "cleared"
    REACTIVATED = "reactivated"  # came back while still on the board
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    HUSHED = "hushed"  # silenced at the device
    CONFIRMED = "confirmed"  # a smoke alarm that another detector of its zone confirmed
    ESCALATED = "escalated"  # notified again, one level up the contact chain
    SUPPRESSED = "suppressed"  # seen during a test-button window: recorded, not raised
    TICKETED = "ticketed"  # a hazard ticket was opened for it (note: the ticket id)


MAX_ESCALATION_LEVEL = 3
SYSTEM = "system"  # the actor of changes hazardwatch makes by itself


def new_id() -> str:
    """A time-ordered, unguessable id: 11 hex digits of epoch ms, 10 of randomness."""
    return f"{time.time_ns() // 1_000_000:011x}{secrets.token_hex(5)}"


class Alert(BaseModel):
    """One alert as the API, the stream and MQTT show it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="stable id")
    kind: AlertKind = Field(description="what was detected")
    severity: Severity = Field(description="current severity")
    state: AlertState = Field(description="active, acknowledged, cleared or resolved")
    institution: str = Field(description="institution id")
    device: str = Field(description="device id (for fire_confirmed: the confirming detector)")
    code: str = Field(default="", description="fault code, or the zone of a fire_confirmed")
    zone: str | None = Field(default=None, description="fire zone of the device")
    raised_at: datetime = Field(description="when hazardwatch raised it")
    updated_at: datetime = Field(description="last change")
    last_seen_at: datetime = Field(description="device time of the last message with it")
    count: int = Field(default=1, description="messages that showed the condition")
    value: float | None = Field(default=None, description="last measured value, if any")
    detail: str = Field(default="", description="human-readable reason")
    cleared_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    note: str | None = Field(default=None, description="note of the last person to act")
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    hushed_at: datetime | None = Field(default=None, description="silenced at the device")
    escalations: int = Field(default=0, description="times notified again, unacknowledged")
    confirmed: bool = Field(
        default=False, description="smoke alarm confirmed by another detector of its zone"
    )
    ticket_id: str | None = Field(default=None, description="hazard ticket, once opened")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def escalation_level(self) -> int:
        """Who is told: 0 duty officer, 1 institution principal, 2 town office, 3 bureau."""
        return min(self.escalations, MAX_ESCALATION_LEVEL)

    @property
    def is_open(self) -> bool:
        """Still on the board."""
        return self.state is not AlertState.RESOLVED


class AlertChange(BaseModel):
    """One change to an alert: the alert after it, what happened, who did it."""

    model_config = ConfigDict(frozen=True)

    alert: Alert
    action: AlertAction
    at: datetime
    actor: str = SYSTEM
    note: str | None = None

"""Shapes of API responses (separate from the database and domain models)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from core.alerting import Alert, AlertAction, AlertState
from core.registry.models import Device


class DevicePublic(Device):
    """A device as the API shows it: registry data plus live state."""

    online: bool | None = Field(default=None, description="None: never heard from")
    last_seen: datetime | None = None
    reading_at: datetime | None = None
    reading: dict[str, float | bool] = Field(default_factory=dict, description="latest values")
    last_seq: int | None = Field(default=None, description="highest seq received")
    missing: int = Field(
        default=0, description="messages skipped in seq since the service started, not come late"
    )


class DeadLetterPublic(BaseModel):
    """A rejected message."""

    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    institution: str | None
    device: str | None
    size: int = Field(description="payload size in bytes as received")
    payload: str = Field(description="payload as text (invalid UTF-8 replaced), cut at 16 KiB")


class DeadLetterPage(BaseModel):
    """A page of dead letters, newest first."""

    items: list[DeadLetterPublic]
    next_before_id: int | None = Field(description="pass as before_id for the next page")
    counts: dict[str, int] = Field(description="dead letters per reason, all time")


class AlertAct(BaseModel):
    """The body of acknowledge and resolve."""

    note: str | None = Field(default=None, max_length=2000, description="what was done")


class HistoryPublic(BaseModel):
    """One change of an alert: who did what, when."""

    model_config = ConfigDict(from_attributes=True)

    at: datetime
    action: AlertAction
    actor: str
    note: str | None
    state: AlertState
    severity: str
    value: float | None


class AlertDetail(Alert):
    """An alert with its history."""

    history: list[HistoryPublic]

"""Shapes of API requests and responses (separate from the database and domain models)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core.alerting import Alert, AlertAction, AlertState, Severity
from core.registry.models import Device
from tickets.models import Ticket, TicketAction, TicketEvent

NUL_REFUSED = "a NUL character (\\u0000, %00) is not allowed"


class FieldError(BaseModel):
    """One invalid part of a request, as FastAPI's validation names it."""

    loc: list[str | int]
    msg: str
    type: str


class Refusal(BaseModel):
    """Why a request was refused: the fields at fault (FastAPI's validation) or, when one of
    the API's own checks refuses it, one sentence."""

    detail: list[FieldError] | str


# The 422 of the routers whose own checks refuse with a sentence (`responses=` of a router).
REFUSAL: dict[int | str, dict[str, Any]] = {
    422: {"model": Refusal, "description": "Invalid request: the fields at fault, or why"}
}
OFFSET_MAX = 2**31 - 1  # the furthest page offset: any database takes it
ID_MAX = 2**63 - 1  # the largest row id (SQLite INTEGER, PostgreSQL bigint)

_DATETIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


def _datetime_text(value: object) -> object:
    """Pydantic would also read a number as seconds since 1970 (`0`, `"0.5"`): refused."""
    if isinstance(value, datetime) or (isinstance(value, str) and _DATETIME_TEXT.match(value)):
        return value
    raise ValueError(
        "a datetime is RFC 3339 text with its UTC offset, e.g. 2026-12-10T10:00:00+08:00"
    )


def _in_utc(value: datetime) -> datetime:
    """The instant exists in UTC (`0001-01-01T00:00:00+01:00` does not: stored as UTC, it
    would be a 500)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("a datetime between years 1 and 9999 in UTC") from None
    return value


# A date and time with its UTC offset, as RFC 3339 text.
DateTimeText = Annotated[AwareDatetime, BeforeValidator(_datetime_text), AfterValidator(_in_utc)]


def no_nul(value: str) -> str:
    """Text without a NUL character: PostgreSQL can neither store nor compare one."""
    if "\x00" in value:
        raise ValueError(f"{NUL_REFUSED} in text")
    return value


# Text of a form field or parameter: no NUL character.
Text = Annotated[str, AfterValidator(no_nul)]


class RequestBody(BaseModel):
    """A request's JSON body: no NUL character in any of its text."""

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value) if isinstance(value, str) else value


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


# [time, mean]; described as a two-item array (OpenAPI 3.1 prefixItems reach FastAPI's
# schema as the old `items: [...]`, which is no valid schema).
ReadingPair = Annotated[
    tuple[datetime, float],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]},
            "minItems": 2,
            "maxItems": 2,
            "description": "[bucket start (UTC), mean]",
        }
    ),
]


class ReadingsPublic(BaseModel):
    """A device's readings, downsampled: per field, [bucket start (UTC), mean] oldest first."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    device: str
    start: datetime = Field(alias="from", description="from (inclusive), UTC")
    stop: datetime = Field(alias="to", description="to (exclusive), UTC")
    every_s: int = Field(description="bucket size in seconds")
    fields: dict[str, list[ReadingPair]] = Field(
        description="field -> [[time, mean]], empty buckets left out"
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


class AlertAct(RequestBody):
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


class EvidenceLink(RequestBody):
    """Evidence given by reference: a link to a photo or report kept elsewhere, or a file
    already uploaded to this ticket (`POST /api/v1/tickets/{id}/attachments`), by its SHA-256.
    """

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, min_length=1, max_length=2000, pattern=r"^https?://")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_target(self) -> EvidenceLink:
        if (self.url is None) == (self.sha256 is None):
            raise ValueError("evidence is either a url or the sha256 of an uploaded file")
        if self.url is not None and self.name is None:
            raise ValueError("a linked piece of evidence needs a name")
        return self


class TicketStep(RequestBody):
    """The body of a step: a note and evidence, both optional."""

    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=5000)
    evidence: list[EvidenceLink] = Field(default_factory=list, max_length=20)


class TicketAssign(TicketStep):
    """Assigning, optionally to another responsible unit or person."""

    responsible_unit: str | None = Field(default=None, min_length=1, max_length=200)
    responsible_person: str | None = Field(default=None, min_length=1, max_length=100)
    responsible_phone: str | None = Field(default=None, max_length=40)


class TicketRectified(TicketStep):
    """Reporting the rectification done, with the measures taken (整改措施)."""

    measures: str = Field(min_length=1, max_length=5000)


class TicketCreate(RequestBody):
    """A hazard from another channel than the sensors."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["self_inspection", "supervisory_inspection", "public_report"]
    institution: str = Field(min_length=1, max_length=64)
    category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str = Field(min_length=1, max_length=200, description="隐患描述")
    description: str = Field(default="", max_length=5000)
    device: str | None = Field(default=None, max_length=64)
    severity: Severity = Severity.MAJOR
    major_hazard: bool = False
    responsible_unit: str | None = Field(default=None, min_length=1, max_length=200)
    responsible_person: str | None = Field(default=None, min_length=1, max_length=100)
    responsible_phone: str | None = Field(default=None, max_length=40)
    measures: str = Field(default="", max_length=5000)
    verification_required: bool = True
    found_at: DateTimeText | None = Field(
        default=None, description="default: now; with its UTC offset, not in the future"
    )
    due_at: DateTimeText = Field(
        description="rectification deadline (整改时限), with its UTC offset; after found_at and "
        "within the policy's longest deadline"
    )
    note: str | None = Field(default=None, max_length=5000)
    evidence: list[EvidenceLink] = Field(default_factory=list, max_length=20)


class TicketDetail(Ticket):
    """A ticket with its audit trail, oldest first."""

    events: list[TicketEvent]
    steps: list[TicketAction] = Field(
        default_factory=list,
        description="the steps the caller may take on it now (its status and their role "
        "allow them); each is checked again when taken",
    )

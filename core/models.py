"""Domain models of the device protocol (contract section 1)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ID_RE = re.compile(ID_PATTERN)
MAX_PAYLOAD_BYTES = 16 * 1024
# Contract section 1: a timestamp more than 5 minutes ahead of the receive time is bad input.
MAX_FUTURE_SKEW_S = 300.0
# A device clock that was never set reads 1970 (or its firmware's build date): a time before
# this is no reading time, whatever the configured age limit (ingest.max_past_days).
EARLIEST_TS = datetime(2020, 1, 1, tzinfo=UTC)

EntityId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def _no_nul(value: str) -> str:
    # Valid JSON and valid Unicode, but PostgreSQL can store no NUL in text: an alert whose
    # detail had one would never reach the SQL tables (its projection retrying for ever).
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


DeviceText = Annotated[str, AfterValidator(_no_nul)]


class DeviceKind(StrEnum):
    SMOKE = "smoke"
    GAS = "gas"
    CO = "co"
    MULTI = "multi"


class EventType(StrEnum):
    ALARM = "alarm"
    ALARM_CLEAR = "alarm_clear"
    FAULT = "fault"
    FAULT_CLEAR = "fault_clear"
    TEST = "test"
    HUSH = "hush"
    TAMPER = "tamper"
    TAMPER_CLEAR = "tamper_clear"
    BATTERY_LOW = "battery_low"
    POWER_ON = "power_on"


class EventSource(StrEnum):
    SMOKE = "smoke"
    GAS = "gas"
    CO = "co"


class FaultCode(StrEnum):
    SENSOR_FAULT = "sensor_fault"
    CHAMBER_DIRTY = "chamber_dirty"
    END_OF_LIFE = "end_of_life"
    LOW_BATTERY = "low_battery"
    TAMPER = "tamper"
    VALVE_FAULT = "valve_fault"
    COMM_FAULT = "comm_fault"
    OTHER = "other"


class Channel(StrEnum):
    """The last segment of a device topic."""

    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"


# Fields of a telemetry reading that are measurements (contract section 2, `reading`).
MEASUREMENT_FIELDS: tuple[str, ...] = (
    "smoke_db_m",
    "gas_lel_pct",
    "co_ppm",
    "temperature_c",
    "battery_pct",
    "rssi_dbm",
)

# Numbers and flags are strict: "12" is not a number and 1 is not `true` (contract section 1).
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Counter = Annotated[int, Strict(), Field(ge=0)]
Flag = Annotated[bool, Strict()]

# Unknown keys are ignored so that devices may send optional fields added later.
_STRICT = ConfigDict(extra="ignore", frozen=True)


class Telemetry(BaseModel):
    """A periodic reading; one with no measurement at all is a heartbeat."""

    model_config = _STRICT

    institution: str
    device: str
    ts: datetime
    ts_from_device: bool = True
    seq: Counter | None = None
    kind: DeviceKind | None = None
    smoke_db_m: Number | None = Field(default=None, ge=0)
    gas_lel_pct: Number | None = Field(default=None, ge=0, le=100)
    co_ppm: Number | None = Field(default=None, ge=0)
    temperature_c: Number | None = None
    battery_pct: Number | None = Field(default=None, ge=0, le=100)
    rssi_dbm: Number | None = None
    alarm: Flag | None = None
    faults: tuple[FaultCode, ...] | None = None  # None: not reported, so nothing clears
    channel: Literal[Channel.TELEMETRY] = Channel.TELEMETRY

    @property
    def is_heartbeat(self) -> bool:
        """True when the message carries no measurement and no alarm state."""
        return self.alarm is None and all(getattr(self, f) is None for f in MEASUREMENT_FIELDS)


class Event(BaseModel):
    """A discrete event reported by a device."""

    model_config = _STRICT

    institution: str
    device: str
    ts: datetime
    ts_from_device: bool = True
    seq: Counter | None = None
    type: EventType
    source: EventSource | None = None
    code: FaultCode | None = None
    detail: DeviceText | None = Field(default=None, max_length=1024)
    channel: Literal[Channel.EVENT] = Channel.EVENT

    @model_validator(mode="after")
    def _fault_has_code(self) -> Event:
        # Contract section 1: `fault`/`fault_clear` carry `code`; without it the fault could
        # never be told apart from another, nor cleared.
        if self.type in (EventType.FAULT, EventType.FAULT_CLEAR) and self.code is None:
            raise ValueError(f"a {self.type.value} event needs a fault code")
        return self


class Status(BaseModel):
    """A device's online/offline state (retained; `offline` is the last will)."""

    model_config = _STRICT

    institution: str
    device: str
    ts: datetime
    ts_from_device: bool = False
    online: bool
    heartbeat_s: Annotated[int, Strict()] | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    retained: bool = False
    channel: Literal[Channel.STATUS] = Channel.STATUS

    @property
    def seq(self) -> int | None:
        """Status messages carry no sequence number."""
        return None


DeviceMessage = Telemetry | Event | Status

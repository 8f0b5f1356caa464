"""Registry records: institutions and their devices."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from core.models import DeviceKind, EntityId

_FORBID = ConfigDict(extra="forbid", frozen=True)


class InstitutionType(StrEnum):
    """Civil-affairs service institutions (民政服务机构) the plans name."""

    ELDERLY_CARE = "elderly_care"
    CHILD_WELFARE = "child_welfare"
    RESCUE_STATION = "rescue_station"
    FUNERAL_HOME = "funeral_home"
    MARRIAGE_REGISTRY = "marriage_registry"
    OTHER = "other"


class Person(BaseModel):
    """A named contact with a phone number."""

    model_config = _FORBID
    name: str = Field(min_length=1, max_length=100, description="full name")
    phone: str | None = Field(default=None, max_length=40, description="phone number")


class Institution(BaseModel):
    """One institution under supervision."""

    model_config = _FORBID
    id: EntityId = Field(description="stable id used in MQTT topics")
    name: str = Field(min_length=1, max_length=200, description="official name")
    type: InstitutionType = Field(default=InstitutionType.ELDERLY_CARE, description="category")
    town: str | None = Field(default=None, max_length=100, description="town or street (乡镇街道)")
    address: str | None = Field(default=None, max_length=300, description="postal address")
    lat: float | None = Field(default=None, ge=-90, le=90, description="latitude, WGS 84")
    lon: float | None = Field(default=None, ge=-180, le=180, description="longitude, WGS 84")
    principal: Person | None = Field(default=None, description="principal person (主要负责人)")
    safety_manager: Person | None = Field(default=None, description="safety manager")


class Location(BaseModel):
    """Where a device hangs."""

    model_config = _FORBID
    building: str | None = Field(default=None, max_length=100, description="building")
    floor: str | None = Field(default=None, max_length=20, description="floor")
    room: str | None = Field(default=None, max_length=50, description="room")


class Device(BaseModel):
    """One detector."""

    model_config = _FORBID
    id: EntityId = Field(description="stable id used in MQTT topics")
    institution: EntityId = Field(description="the institution it belongs to")
    kind: DeviceKind = Field(description="smoke, gas, co or multi")
    model: str | None = Field(default=None, max_length=100, description="manufacturer model")
    location: Location = Field(default_factory=Location, description="building/floor/room")
    zone: str | None = Field(default=None, max_length=100, description="fire zone within the site")
    heartbeat_s: int = Field(default=300, gt=0, le=7 * 24 * 3600, description="longest silence")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="per-device alarm thresholds, e.g. gas_lel_pct"
    )
    auto_registered: bool = Field(default=False, description="added from its first message")


class RegistryFile(BaseModel):
    """The content of a registry import file."""

    model_config = _FORBID
    institutions: list[Institution] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

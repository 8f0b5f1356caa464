"""Devices: registry data and live state."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import ContextDep, CurrentUser, NeedsDatabase, narrow, scope
from api.schemas import REFUSAL, DateTimeText, DevicePublic, ReadingsPublic
from core.errors import InvalidInputError, StoreError
from core.readings import MAX_POINTS, MAX_RANGE, READING_FIELDS, readings_query
from core.registry.models import Device
from core.users import User

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/v1/devices", tags=["devices"], dependencies=[NeedsDatabase], responses=REFUSAL
)


def public(context: ContextDep, device: Device) -> DevicePublic:
    """A device with its live state, as far as this process has heard of it."""
    state = context.presence.get(device.id)
    live = {}
    if state is not None:
        live = {
            "online": state.online,
            "last_seen": state.last_seen,
            "reading_at": state.reading_at,
            "reading": state.reading,
            "last_seq": state.last_seq,
            "missing": state.missing,
        }
    return DevicePublic(**device.model_dump(), **live)


@router.get("")
def list_devices(
    context: ContextDep,
    user: CurrentUser,
    institution: Annotated[
        list[str] | None, Query(description="only these institutions (repeated or a,b)")
    ] = None,
) -> list[DevicePublic]:
    """The devices the caller may see (of `institution`, if given), with their live state."""
    asked = [part for value in institution or [] for part in value.split(",") if part]
    wanted = narrow(asked or None, scope(context, user))
    chosen = None if wanted is None else set(wanted)
    return [
        public(context, device)
        for device in context.registry.devices()
        if chosen is None or device.institution in chosen
    ]


def _visible(context: ContextDep, user: User, device_id: str) -> Device:
    """The device, if it exists and the user may see it (else 404: not even that it exists)."""
    device = context.registry.device(device_id)
    visible = scope(context, user)
    if device is None or (visible is not None and device.institution not in visible):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    return device


@router.get("/{device_id}")
def get_device(device_id: str, context: ContextDep, user: CurrentUser) -> DevicePublic:
    """Registry data plus `online`, `last_seen` and the latest reading."""
    return public(context, _visible(context, user, device_id))


@router.get(
    "/{device_id}/readings",
    responses={503: {"description": "the time-series store does not answer"}},
)
def get_readings(
    device_id: str,
    context: ContextDep,
    user: CurrentUser,
    start: Annotated[
        DateTimeText | None, Query(alias="from", description="RFC 3339; default: `to` - 24 h")
    ] = None,
    stop: Annotated[DateTimeText | None, Query(alias="to", description="default: now")] = None,
    fields: Annotated[
        list[str] | None,
        Query(description=f"repeat or comma-separate; default all: {', '.join(READING_FIELDS)}"),
    ] = None,
    every: Annotated[
        int | None,
        Query(
            ge=1,
            le=int(MAX_RANGE.total_seconds()),
            description=f"bucket in seconds; raised to keep at most {MAX_POINTS} per field",
        ),
    ] = None,
) -> ReadingsPublic:
    """A device's readings from `from` to `to` (at most 90 days), as the mean of each field per
    bucket of `every_s` seconds (buckets start at multiples of it since 1970, UTC)."""
    device = _visible(context, user, device_id)
    try:
        query = readings_query(
            device.id, start=start, stop=stop, every_s=every, fields=fields, now=datetime.now(UTC)
        )
    except InvalidInputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if context.readings is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no time-series store to read")
    try:
        series = context.readings.readings(query)
    except StoreError as exc:
        log.warning("readings of device %s: the time-series store failed: %s", device.id, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the time-series store does not answer, try again later: {exc}",
            headers={"Retry-After": "10"},
        ) from None
    return ReadingsPublic(
        device=device.id, start=query.start, stop=query.stop, every_s=query.every_s, fields=series
    )

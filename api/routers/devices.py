"""Devices: registry data and live state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import ContextDep, CurrentUser, NeedsDatabase, narrow, scope
from api.schemas import DevicePublic
from core.registry.models import Device

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], dependencies=[NeedsDatabase])


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


@router.get("/{device_id}")
def get_device(device_id: str, context: ContextDep, user: CurrentUser) -> DevicePublic:
    """Registry data plus `online`, `last_seen` and the latest reading."""
    device = context.registry.device(device_id)
    visible = scope(context, user)
    if device is None or (visible is not None and device.institution not in visible):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    return public(context, device)

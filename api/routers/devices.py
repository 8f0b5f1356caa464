"""Devices: registry data and live state."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import ContextDep, CurrentUser, NeedsDatabase, scope
from api.schemas import DevicePublic

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], dependencies=[NeedsDatabase])


@router.get("/{device_id}")
def get_device(device_id: str, context: ContextDep, user: CurrentUser) -> DevicePublic:
    """Registry data plus `online`, `last_seen` and the latest reading."""
    device = context.registry.device(device_id)
    visible = scope(context, user)
    if device is None or (visible is not None and device.institution not in visible):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    state = context.presence.get(device_id)
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

"""Institutions: the registry's records of the homes the caller may see, with a summary of
their devices' live state (the console's institution page and the board's names and
contacts)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import Field

from api.deps import ContextDep, CurrentUser, NeedsDatabase, scope
from core.registry.models import Institution

router = APIRouter(
    prefix="/api/v1/institutions", tags=["institutions"], dependencies=[NeedsDatabase]
)


class InstitutionPublic(Institution):
    """An institution and how many of its devices are online now."""

    devices: int = Field(default=0, description="devices in the registry")
    online: int = Field(default=0, description="of them heard from and online by their status")
    offline: int = Field(default=0, description="of them offline by their last status")


def _summaries(context: ContextDep, institutions: list[Institution]) -> list[InstitutionPublic]:
    counts: dict[str, list[int]] = {i.id: [0, 0, 0] for i in institutions}
    for device in context.registry.devices():
        count = counts.get(device.institution)
        if count is None:
            continue
        count[0] += 1
        state = context.presence.get(device.id)
        if state is not None and state.online is True:
            count[1] += 1
        elif state is not None and state.online is False:
            count[2] += 1
    return [
        InstitutionPublic(
            **i.model_dump(),
            devices=counts[i.id][0],
            online=counts[i.id][1],
            offline=counts[i.id][2],
        )
        for i in institutions
    ]


@router.get("")
def list_institutions(context: ContextDep, user: CurrentUser) -> list[InstitutionPublic]:
    """The institutions the caller may see."""
    visible = scope(context, user)
    chosen = None if visible is None else set(visible)
    found = [i for i in context.registry.institutions() if chosen is None or i.id in chosen]
    return _summaries(context, found)


@router.get("/{institution_id}")
def get_institution(
    institution_id: str, context: ContextDep, user: CurrentUser
) -> InstitutionPublic:
    """One institution the caller may see."""
    visible = scope(context, user)
    institution = context.registry.institution(institution_id)
    if institution is None or (visible is not None and institution_id not in visible):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no institution {institution_id!r}")
    return _summaries(context, [institution])[0]

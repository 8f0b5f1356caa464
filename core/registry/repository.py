"""Reading and writing the registry in the SQL database."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import RegistryError
from core.models import DeviceKind
from core.registry.models import Device, Institution, InstitutionType, Location, Person
from core.registry.tables import DeviceRow, InstitutionRow


def _person(name: str | None, phone: str | None) -> Person | None:
    return Person(name=name, phone=phone) if name else None


def institution_from_row(row: InstitutionRow) -> Institution:
    """The registry model of a table row."""
    return Institution(
        id=row.id,
        name=row.name,
        type=InstitutionType(row.type),
        town=row.town,
        address=row.address,
        lat=row.lat,
        lon=row.lon,
        principal=_person(row.principal_name, row.principal_phone),
        safety_manager=_person(row.safety_manager_name, row.safety_manager_phone),
    )


def device_from_row(row: DeviceRow) -> Device:
    """The registry model of a table row."""
    return Device(
        id=row.id,
        institution=row.institution_id,
        kind=DeviceKind(row.kind),
        model=row.model,
        location=Location(building=row.building, floor=row.floor, room=row.room),
        zone=row.zone,
        heartbeat_s=row.heartbeat_s,
        thresholds=dict(row.thresholds or {}),
        auto_registered=row.auto_registered,
    )


def _institution_values(item: Institution) -> dict[str, object]:
    principal, manager = item.principal, item.safety_manager
    return {
        "name": item.name,
        "type": item.type.value,
        "town": item.town,
        "address": item.address,
        "lat": item.lat,
        "lon": item.lon,
        "principal_name": principal.name if principal else None,
        "principal_phone": principal.phone if principal else None,
        "safety_manager_name": manager.name if manager else None,
        "safety_manager_phone": manager.phone if manager else None,
    }


def _device_values(item: Device) -> dict[str, object]:
    return {
        "institution_id": item.institution,
        "kind": item.kind.value,
        "model": item.model,
        "building": item.location.building,
        "floor": item.location.floor,
        "room": item.location.room,
        "zone": item.zone,
        "heartbeat_s": item.heartbeat_s,
        "thresholds": dict(item.thresholds),
        "auto_registered": item.auto_registered,
    }


class RegistryRepository:
    """Institutions and devices in SQL."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def upsert_institutions(self, items: Iterable[Institution]) -> int:
        """Insert or update institutions by id; return how many."""
        count = 0
        with self._sessions.begin() as session:
            for item in items:
                row = session.get(InstitutionRow, item.id) or InstitutionRow(id=item.id)
                for key, value in _institution_values(item).items():
                    setattr(row, key, value)
                session.add(row)
                count += 1
        return count

    def upsert_devices(self, items: Iterable[Device]) -> int:
        """Insert or update devices by id; return how many."""
        count = 0
        with self._sessions.begin() as session:
            for item in items:
                if session.get(InstitutionRow, item.institution) is None:
                    raise RegistryError(f"device {item.id}: unknown institution {item.institution}")
                row = session.get(DeviceRow, item.id) or DeviceRow(id=item.id)
                for key, value in _device_values(item).items():
                    setattr(row, key, value)
                session.add(row)
                count += 1
        return count

    def add_auto_registered(self, devices: Iterable[Device]) -> None:
        """Add devices first seen on the wire, with a placeholder institution if needed.

        One short transaction of bulk statements: the SQLite file is shared with the alert
        writer, which must not wait behind a row-by-row ORM flush.
        """
        wanted = {device.id: device for device in devices}
        try:
            self._add_new(wanted)
        except IntegrityError:  # another process added some meanwhile: those are skipped now
            self._add_new(wanted)

    def _add_new(self, wanted: dict[str, Device]) -> None:
        if not wanted:
            return
        with self._sessions.begin() as session:
            known = set(session.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(wanted))))
            new = [d for d in wanted.values() if d.id not in known]
            if not new:
                return
            places = {d.institution for d in new}
            have = set(
                session.scalars(select(InstitutionRow.id).where(InstitutionRow.id.in_(places)))
            )
            missing = [Institution(id=i, name=i, type=InstitutionType.OTHER) for i in places - have]
            if missing:
                session.execute(
                    insert(InstitutionRow),
                    [{"id": i.id, **_institution_values(i)} for i in missing],
                )
            session.execute(insert(DeviceRow), [{"id": d.id, **_device_values(d)} for d in new])

    def devices(self) -> list[Device]:
        """Every device."""
        with self._sessions() as session:
            rows = session.scalars(select(DeviceRow).order_by(DeviceRow.id))
            return [device_from_row(r) for r in rows]

    def institutions(self) -> list[Institution]:
        """Every institution."""
        with self._sessions() as session:
            rows = session.scalars(select(InstitutionRow).order_by(InstitutionRow.id))
            return [institution_from_row(r) for r in rows]

    def device(self, device_id: str) -> Device | None:
        """One device, or None."""
        with self._sessions() as session:
            row = session.get(DeviceRow, device_id)
            return device_from_row(row) if row else None

    def institution(self, institution_id: str) -> Institution | None:
        """One institution, or None."""
        with self._sessions() as session:
            row = session.get(InstitutionRow, institution_id)
            return institution_from_row(row) if row else None

    def ping(self) -> bool:
        """True when the database answers."""
        with self._sessions() as session:
            session.execute(text("SELECT 1"))
        return True

"""A deterministic, plausible fleet: institutions, their detectors, and the registry file."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import yaml

from core.models import DeviceKind
from core.registry.models import InstitutionType

T = TypeVar("T")

DEFAULT_HEARTBEAT_S: Final = 300
MAX_HEARTBEAT_S: Final = 7 * 24 * 3600  # the registry's upper bound

_TOWNS: Final = (
    "城关街道", "东湖街道", "西湖街道", "南山镇", "北塘镇", "临江街道",
    "青石镇", "白沙镇", "新城街道", "河西街道", "龙泉镇", "凤凰街道",
)  # fmt: skip
_ROADS: Final = ("人民路", "解放路", "中山路", "建设路", "和平路", "文化路", "康宁路", "滨江路")
_CARE_WORDS: Final = (
    "阳光",
    "福寿",
    "康乐",
    "松鹤",
    "夕阳红",
    "颐和",
    "安康",
    "长青",
    "仁和",
    "慈心",
)
_CARE_KINDS: Final = ("养老院", "敬老院", "颐养院", "康养中心", "老年公寓", "社会福利中心")
_PUBLIC_NAMES: Final = {
    InstitutionType.CHILD_WELFARE: "儿童福利院",
    InstitutionType.RESCUE_STATION: "救助管理站",
    InstitutionType.FUNERAL_HOME: "殡仪馆",
    InstitutionType.MARRIAGE_REGISTRY: "婚姻登记处",
}
_SURNAMES: Final = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_GIVEN: Final = ("建国", "秀英", "丽华", "伟", "芳", "敏", "静", "强", "磊", "军", "勇", "娟", "涛")
_TYPE_WEIGHTS: Final = (
    (InstitutionType.ELDERLY_CARE, 0.6),
    (InstitutionType.CHILD_WELFARE, 0.1),
    (InstitutionType.RESCUE_STATION, 0.1),
    (InstitutionType.FUNERAL_HOME, 0.1),
    (InstitutionType.MARRIAGE_REGISTRY, 0.1),
)
_KIND_WEIGHTS: Final = (
    (DeviceKind.SMOKE, 0.6),
    (DeviceKind.GAS, 0.15),
    (DeviceKind.CO, 0.1),
    (DeviceKind.MULTI, 0.15),
)
KIND_CODES: Final = {
    DeviceKind.SMOKE: "smk",
    DeviceKind.GAS: "gas",
    DeviceKind.CO: "co",
    DeviceKind.MULTI: "mul",
}
_MODELS: Final = {
    DeviceKind.SMOKE: ("JTY-GD-SL200", "JTY-GF-NB301", "JTY-GD-H386"),
    DeviceKind.GAS: ("JT-KB-G510", "GTYQ-NB60"),
    DeviceKind.CO: ("JTY-CO-Q100", "JTY-CO-NB12"),
    DeviceKind.MULTI: ("JTF-GOM-M500", "JTY-FC-NB900"),
}
_SERVICE_ROOMS: Final = {
    DeviceKind.GAS: ("厨房", "食堂操作间", "锅炉房", "配餐间"),
    DeviceKind.CO: ("锅炉房", "洗衣房", "配电间"),
}
_ROOMS_PER_FLOOR: Final = 4
_FLOORS: Final = 5


@dataclass(frozen=True, slots=True)
class Person:
    """A contact of an institution."""

    name: str
    phone: str


@dataclass(frozen=True, slots=True)
class InstitutionSpec:
    """One simulated institution, as the registry describes it."""

    id: str
    name: str
    type: InstitutionType
    town: str
    address: str
    lat: float
    lon: float
    principal: Person
    safety_manager: Person


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated detector, as the registry describes it."""

    id: str
    institution: str
    kind: DeviceKind
    model: str
    building: str
    floor: int
    room: str
    heartbeat_s: int = DEFAULT_HEARTBEAT_S

    @property
    def zone(self) -> str:
        """The fire zone: one floor of one building, e.g. `1号楼-2F`."""
        return f"{self.building}-{self.floor}F"

    @property
    def battery_powered(self) -> bool:
        """Gas detectors are mains powered (and drive a shut-off valve); the others are not."""
        return self.kind is not DeviceKind.GAS


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Every institution and device of a simulated fleet."""

    institutions: tuple[InstitutionSpec, ...]
    devices: tuple[DeviceSpec, ...]


def heartbeat_for(devices: int, rate: float, malformed: float = 0.0) -> int:
    """A heartbeat long enough for round-robin publishing: three device periods, whole minutes."""
    device_rate = rate * (1.0 - min(malformed, 0.99))
    period = devices / device_rate if device_rate > 0 else MAX_HEARTBEAT_S
    seconds = max(DEFAULT_HEARTBEAT_S, math.ceil(3 * period / 60) * 60)
    return min(seconds, MAX_HEARTBEAT_S)


def _weighted(rng: random.Random, table: tuple[tuple[T, float], ...]) -> T:
    return rng.choices([value for value, _ in table], [weight for _, weight in table])[0]


def _person(rng: random.Random) -> Person:
    name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
    return Person(name, f"1{rng.choice('3589')}{rng.randrange(10**9):09d}")


def _institution_name(rng: random.Random, kind: InstitutionType, town: str) -> str:
    if kind is InstitutionType.ELDERLY_CARE:
        return rng.choice(_CARE_WORDS) + rng.choice(_CARE_KINDS)
    return town.removesuffix("街道").removesuffix("镇") + _PUBLIC_NAMES[kind]


def _institution(rng: random.Random, number: int, width: int, used: set[str]) -> InstitutionSpec:
    kind = _weighted(rng, _TYPE_WEIGHTS)
    town = rng.choice(_TOWNS)
    name = _institution_name(rng, kind, town)
    if name in used:
        name = f"{town.removesuffix('街道').removesuffix('镇')}{name}"
    if name in used:
        name = f"{name}{number}分院"
    used.add(name)
    return InstitutionSpec(
        id=f"inst-{number:0{width}d}",
        name=name,
        type=kind,
        town=town,
        address=f"{town}{rng.choice(_ROADS)}{rng.randrange(1, 400)}号",
        lat=round(30.25 + rng.uniform(-0.15, 0.15), 5),
        lon=round(120.15 + rng.uniform(-0.15, 0.15), 5),
        principal=_person(rng),
        safety_manager=_person(rng),
    )


def _place(rng: random.Random, kind: DeviceKind, slot: int) -> tuple[str, int, str]:
    """Building, floor and room: residential floors fill four rooms at a time."""
    per_building = _FLOORS * _ROOMS_PER_FLOOR
    building = f"{slot // per_building + 1}号楼"
    if kind in _SERVICE_ROOMS:
        return building, 1, rng.choice(_SERVICE_ROOMS[kind])
    floor = slot % per_building // _ROOMS_PER_FLOOR + 1
    return building, floor, f"{floor}{slot % _ROOMS_PER_FLOOR + 1:02d}"


def devices_of(
    rng: random.Random, institution: str, count: int, heartbeat_s: int
) -> list[DeviceSpec]:
    """`count` detectors of one institution: residential floors first, gas and CO in service
    rooms."""
    width = max(3, len(str(count)))
    numbers = dict.fromkeys(DeviceKind, 0)
    devices = []
    for slot in range(count):
        kind = _weighted(rng, _KIND_WEIGHTS)
        numbers[kind] += 1
        building, floor, room = _place(rng, kind, slot)
        device_id = f"{institution}-{KIND_CODES[kind]}-{numbers[kind]:0{width}d}"
        model = rng.choice(_MODELS[kind])
        devices.append(
            DeviceSpec(device_id, institution, kind, model, building, floor, room, heartbeat_s)
        )
    return devices


def build_fleet_spec(
    institutions: int, devices: int, seed: int, *, heartbeat_s: int = DEFAULT_HEARTBEAT_S
) -> FleetSpec:
    """The same institutions and devices for the same arguments, every time."""
    if institutions < 1 or devices < 0:
        raise ValueError("need at least one institution and a non-negative device count")
    rng = random.Random(f"hazardwatch-fleet/{seed}")
    width = max(3, len(str(institutions)))
    used: set[str] = set()
    insts = tuple(_institution(rng, n + 1, width, used) for n in range(institutions))
    share, extra = divmod(devices, institutions)
    devs: list[DeviceSpec] = []
    for index, inst in enumerate(insts):
        devs += devices_of(rng, inst.id, share + (index < extra), heartbeat_s)
    return FleetSpec(insts, tuple(devs))


def registry_document(spec: FleetSpec) -> dict[str, list[dict[str, object]]]:
    """The registry file content that the importer reads (core.registry.models.RegistryFile)."""
    institutions: list[dict[str, object]] = [
        {
            "id": i.id,
            "name": i.name,
            "type": i.type.value,
            "town": i.town,
            "address": i.address,
            "lat": i.lat,
            "lon": i.lon,
            "principal": {"name": i.principal.name, "phone": i.principal.phone},
            "safety_manager": {"name": i.safety_manager.name, "phone": i.safety_manager.phone},
        }
        for i in spec.institutions
    ]
    devices: list[dict[str, object]] = [
        {
            "id": d.id,
            "institution": d.institution,
            "kind": d.kind.value,
            "model": d.model,
            # The registry stores floor and room as text ("B1", "夹层"), so floor is a string.
            "location": {"building": d.building, "floor": str(d.floor), "room": d.room},
            "zone": d.zone,
            "heartbeat_s": d.heartbeat_s,
        }
        for d in spec.devices
    ]
    return {"institutions": institutions, "devices": devices}


def write_registry(spec: FleetSpec, path: Path) -> None:
    """Write the fleet as a YAML registry file (UTF-8, Chinese kept readable)."""
    text = yaml.safe_dump(
        registry_document(spec), allow_unicode=True, sort_keys=False, default_flow_style=None
    )
    path.write_text(text, encoding="utf-8")

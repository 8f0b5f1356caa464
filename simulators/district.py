"""The demo's district: a dozen named institutions in three towns, with their detectors.

Hand-written rather than drawn at random so that the demo reads like a real district
(区民政局) on the duty officer's screen: welfare homes, village homes for the elderly (敬老院),
a children's home, a rescue station, a veterans' home (光荣院), each with its contacts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from core.registry.models import InstitutionType
from simulators.registry import (
    DEFAULT_HEARTBEAT_S,
    FleetSpec,
    InstitutionSpec,
    Person,
    devices_of,
)

TOWNS: Final = ("城关街道", "东湖街道", "青石镇")


@dataclass(frozen=True, slots=True)
class Site:
    """One institution of the district as written down here; `size` weighs its detectors."""

    name: str
    type: InstitutionType
    town: str
    road: str
    size: int


# 光荣院 (veterans' home) is no type of the registry: it is `other`.
SITES: Final = (
    Site("城关街道社会福利院", InstitutionType.ELDERLY_CARE, TOWNS[0], "人民路88号", 5),
    Site("阳光颐养院", InstitutionType.ELDERLY_CARE, TOWNS[0], "解放路126号", 4),
    Site("区儿童福利院", InstitutionType.CHILD_WELFARE, TOWNS[0], "文化路17号", 3),
    Site("区救助管理站", InstitutionType.RESCUE_STATION, TOWNS[0], "建设路302号", 2),
    Site("东湖街道敬老院", InstitutionType.ELDERLY_CARE, TOWNS[1], "东湖路45号", 3),
    Site("福寿康养中心", InstitutionType.ELDERLY_CARE, TOWNS[1], "滨江路210号", 5),
    Site("区光荣院", InstitutionType.OTHER, TOWNS[1], "和平路9号", 2),
    Site("松鹤老年公寓", InstitutionType.ELDERLY_CARE, TOWNS[1], "康宁路66号", 3),
    Site("青石镇中心敬老院", InstitutionType.ELDERLY_CARE, TOWNS[2], "青石街1号", 4),
    Site("青石镇康乐养老院", InstitutionType.ELDERLY_CARE, TOWNS[2], "新塘村58号", 2),
    Site("青石镇夕阳红护理院", InstitutionType.ELDERLY_CARE, TOWNS[2], "龙泉路33号", 3),
    Site("区社会福利中心", InstitutionType.ELDERLY_CARE, TOWNS[2], "凤凰大道500号", 4),
)
DEFAULT_INSTITUTIONS: Final = len(SITES)
DEFAULT_DEVICES: Final = 300

_SURNAMES: Final = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_GIVEN: Final = ("建国", "秀英", "丽华", "海燕", "志强", "桂兰", "晓东", "红梅", "国平", "玉珍")
# The towns' rough centres (WGS 84), so that a map shows three clusters.
_CENTRES: Final = {
    TOWNS[0]: (30.274, 120.155),
    TOWNS[1]: (30.262, 120.21),
    TOWNS[2]: (30.18, 120.1),
}


def _person(rng: random.Random) -> Person:
    name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
    return Person(name, f"1{rng.choice('3589')}{rng.randrange(10**9):09d}")


def _institution(rng: random.Random, number: int, width: int) -> InstitutionSpec:
    """The number-th institution (from 1); beyond the table, branches (分院) of its sites."""
    site = SITES[(number - 1) % len(SITES)]
    branch = (number - 1) // len(SITES)
    name = site.name if branch == 0 else f"{site.name}第{branch + 1}分院"
    lat, lon = _CENTRES[site.town]
    return InstitutionSpec(
        id=f"inst-{number:0{width}d}",
        name=name,
        type=site.type,
        town=site.town,
        address=f"{site.town}{site.road}",
        lat=round(lat + rng.uniform(-0.02, 0.02), 5),
        lon=round(lon + rng.uniform(-0.02, 0.02), 5),
        principal=_person(rng),
        safety_manager=_person(rng),
    )


def _shares(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, the rounding given to the biggest first."""
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    by_size = sorted(range(len(weights)), key=lambda i: -weights[i])
    for k in range(total - sum(shares)):
        shares[by_size[k % len(by_size)]] += 1
    return shares


def district_fleet_spec(
    institutions: int = DEFAULT_INSTITUTIONS,
    devices: int = DEFAULT_DEVICES,
    seed: int = 1,
    *,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
) -> FleetSpec:
    """The demo district: the same institutions and devices for the same arguments."""
    if institutions < 1 or devices < 0:
        raise ValueError("need at least one institution and a non-negative device count")
    rng = random.Random(f"hazardwatch-district/{seed}")
    width = max(3, len(str(institutions)))
    insts = tuple(_institution(rng, n + 1, width) for n in range(institutions))
    weights = [SITES[n % len(SITES)].size for n in range(institutions)]
    devs = []
    for inst, count in zip(insts, _shares(devices, weights), strict=True):
        devs += devices_of(rng, inst.id, count, heartbeat_s)
    return FleetSpec(insts, tuple(devs))

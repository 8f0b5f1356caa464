"""Named scenarios: what goes wrong in an institution, step by step, as its detectors tell it.

A scenario picks its devices in one institution (`cast`) and gives timed steps (`script`); each
step acts on simulated devices that publish through MQTT like real ones (simulators/story.py
runs them). Times are seconds from the scenario's start at speed 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from core.alerting import AlertKind
from core.models import DeviceKind, EventSource, FaultCode
from simulators.device import SimDevice
from simulators.registry import DeviceSpec, FleetSpec

Cast = tuple[DeviceSpec, ...]


class Stage(Protocol):
    """Where a scenario acts: the running devices (a Simulation, or a test's stand-in)."""

    def device(self, device_id: str) -> SimDevice:
        """The running device with this id."""
        ...

    def power_off(self, device_id: str) -> None:
        """The device falls silent and goes offline."""
        ...

    def power_on(self, device_id: str) -> None:
        """The device comes back."""
        ...


@dataclass(frozen=True, slots=True)
class Step:
    """One moment of a scenario: when, what the narrator says, and what happens."""

    at_s: float
    zh: str
    en: str
    act: Callable[[Stage], None]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named story of one institution's detectors."""

    name: str
    title_zh: str
    title_en: str
    about_zh: str
    about_en: str
    raises: tuple[AlertKind, ...]  # the alert kinds it shows
    cast: Callable[[FleetSpec, str], Cast | None]  # None: this institution cannot play it
    script: Callable[[Cast], tuple[Step, ...]]

    def duration_s(self, cast: Cast) -> float:
        """From the first step to the last, at speed 1."""
        return max(step.at_s for step in self.script(cast))


def _devices(spec: FleetSpec, institution: str, kinds: tuple[DeviceKind, ...]) -> list[DeviceSpec]:
    return [d for d in spec.devices if d.institution == institution and d.kind in kinds]


_SMOKE_KINDS: Final = (DeviceKind.SMOKE, DeviceKind.MULTI)


def _zone_pair(spec: FleetSpec, institution: str) -> Cast | None:
    """Two smoke detectors of one zone (the first zone that has two)."""
    by_zone: dict[str, list[DeviceSpec]] = {}
    for device in _devices(spec, institution, _SMOKE_KINDS):
        by_zone.setdefault(device.zone, []).append(device)
    pairs = [members[:2] for _, members in sorted(by_zone.items()) if len(members) >= 2]
    return tuple(pairs[0]) if pairs else None


def _one(kinds: tuple[DeviceKind, ...]) -> Callable[[FleetSpec, str], Cast | None]:
    def cast(spec: FleetSpec, institution: str) -> Cast | None:
        found = _devices(spec, institution, kinds)
        return (found[0],) if found else None

    return cast


def _clear_alarms(stage: Stage, cast: Cast) -> None:
    for device in cast:
        stage.device(device.id).clear_alarm()


def _fire(cast: Cast) -> tuple[Step, ...]:
    first, second = cast
    return (
        Step(
            0,
            "烟感报警:房间内烟雾浓度超过报警阈值",
            "smoke alarm: smoke above the alarm point",
            lambda s: s.device(first.id).start_alarm(EventSource.SMOKE),
        ),
        Step(
            20,
            f"同一防火分区({second.zone})第二只探测器报警:火警确认",
            f"a second detector of zone {second.zone} alarms: fire confirmed",
            lambda s: s.device(second.id).start_alarm(EventSource.SMOKE),
        ),
        Step(
            90,
            "火已扑灭,烟雾散去,探测器恢复正常",
            "the fire is out, the smoke clears, the detectors are quiet again",
            lambda s: _clear_alarms(s, cast),
        ),
    )


def _gas_leak(cast: Cast) -> tuple[Step, ...]:
    (detector,) = cast
    return (
        Step(
            0,
            "燃气浓度升至 35 %LEL:一级报警",
            "gas rises to 35 %LEL: level 1 (major)",
            lambda s: s.device(detector.id).gas_ramp(35.0, steps=3),
        ),
        Step(
            20,
            "燃气浓度升至 62 %LEL:二级报警",
            "gas rises to 62 %LEL: level 2 (critical)",
            lambda s: s.device(detector.id).gas_ramp(62.0, steps=2),
        ),
        Step(
            45,
            "关闭阀门、开窗通风,浓度降至 2 %LEL,报警解除",
            "valve shut, windows open: gas falls to 2 %LEL, the alarm clears",
            lambda s: s.device(detector.id).gas_ramp(2.0, steps=3),
        ),
    )


def _offline(cast: Cast) -> tuple[Step, ...]:
    (detector,) = cast
    return (
        Step(
            0,
            "探测器失联(电源或通信中断)",
            "the detector falls silent (power or radio lost)",
            lambda s: s.power_off(detector.id),
        ),
        Step(
            150,
            "维保人员修复,探测器重新上线",
            "the contractor repairs it: the detector is back online",
            lambda s: s.power_on(detector.id),
        ),
    )


def _low_battery(cast: Cast) -> tuple[Step, ...]:
    (detector,) = cast
    return (
        Step(
            0,
            "探测器电池电量降至 12 %",
            "the detector's battery falls to 12 %",
            lambda s: s.device(detector.id).set_battery(12.0),
        ),
        Step(
            240,
            "更换电池,电量 100 %",
            "the battery is replaced: 100 %",
            lambda s: s.device(detector.id).set_battery(100.0),
        ),
    )


def _fault(cast: Cast) -> tuple[Step, ...]:
    (detector,) = cast
    return (
        Step(
            0,
            "探测器自检发现传感器故障",
            "the detector's self-check finds a sensor fault",
            lambda s: s.device(detector.id).fault(FaultCode.SENSOR_FAULT),
        ),
        Step(
            180,
            "维保单位更换传感器,故障排除",
            "the contractor replaces the sensor: the fault clears",
            lambda s: s.device(detector.id).clear_fault(FaultCode.SENSOR_FAULT),
        ),
    )


FIRE: Final = Scenario(
    "fire",
    "火警确认",
    "confirmed fire",
    "一只烟感报警,20 秒后同一防火分区的第二只报警:smoke_alarm,然后 fire_confirmed"
    "(工单:火警事件复盘);90 秒后恢复",
    "one smoke detector alarms, a second of the same zone 20 s later: smoke_alarm, then "
    "fire_confirmed (ticket: incident review); quiet again after 90 s",
    (AlertKind.SMOKE_ALARM, AlertKind.FIRE_CONFIRMED),
    _zone_pair,
    _fire,
)
GAS_LEAK: Final = Scenario(
    "gas_leak",
    "燃气泄漏",
    "gas leak",
    "燃气浓度 35 %LEL(major)→ 62 %LEL(critical)→ 2 %LEL(解除),共 45 秒(工单:燃气泄漏)",
    "gas 35 %LEL (major) → 62 %LEL (critical) → 2 %LEL (cleared) over 45 s (ticket: gas leak)",
    (AlertKind.GAS_LEAK,),
    _one((DeviceKind.GAS,)),
    _gas_leak,
)
OFFLINE: Final = Scenario(
    "offline",
    "设备离线",
    "device offline",
    "一只探测器失联:device_offline;按工单策略延时后开维修工单;150 秒后恢复",
    "a detector falls silent: device_offline; a repair ticket after the policy's delay; "
    "back after 150 s",
    (AlertKind.DEVICE_OFFLINE,),
    _one(_SMOKE_KINDS),
    _offline,
)
LOW_BATTERY: Final = Scenario(
    "low_battery",
    "电池电量低",
    "low battery",
    "一只探测器电量降至 12 %:low_battery(工单);240 秒后更换电池",
    "a detector's battery falls to 12 %: low_battery (ticket); replaced after 240 s",
    (AlertKind.LOW_BATTERY,),
    _one((DeviceKind.SMOKE, DeviceKind.CO, DeviceKind.MULTI)),
    _low_battery,
)
FAULT: Final = Scenario(
    "fault",
    "设备故障",
    "device fault",
    "一只探测器报传感器故障:device_fault(维保工单);180 秒后排除",
    "a detector reports a sensor fault: device_fault (maintenance ticket); fixed after 180 s",
    (AlertKind.DEVICE_FAULT,),
    _one(_SMOKE_KINDS),
    _fault,
)
SCENARIOS: Final = {s.name: s for s in (FIRE, GAS_LEAK, OFFLINE, LOW_BATTERY, FAULT)}

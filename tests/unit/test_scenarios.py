"""The demo district, the named scenarios, their timing and what their devices publish."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest

from core.alerting import AlertKind
from core.models import DeviceKind
from core.registry.models import InstitutionType, RegistryFile
from core.settings import AlertSettings
from simulators import cli
from simulators.device import BATTERY_LOW_PCT, THRESHOLDS, SimDevice
from simulators.district import SITES, TOWNS, district_fleet_spec
from simulators.fleet import Fleet
from simulators.registry import FleetSpec, registry_document
from simulators.scenarios import SCENARIOS, Scenario
from simulators.story import (
    DEFAULT_INTERVAL_S,
    DEFAULT_LEAD_S,
    LINEUP,
    Casting,
    Story,
    perform,
    scenario_fleet,
)
from tickets.policy import load_policy

NOW_MS = 1_790_000_000_000
SPEC = district_fleet_spec()
FIRST_MINUTES_S = 120.0
LEDGER_TICK_S = 5.0  # tickets.stage.TICK_S: a delayed ticket opens at the next tick
DEMO_OFFLINE_TICKET_S = 60.0  # `hazardwatch demo --offline-ticket-after` default


class FakeStage:
    """The fleet's devices without MQTT; power switches recorded."""

    def __init__(self, spec: FleetSpec) -> None:
        self.fleet = Fleet(spec)
        self.switched: list[tuple[str, str]] = []

    def device(self, device_id: str) -> SimDevice:
        return self.fleet.device(device_id)

    def power_off(self, device_id: str) -> None:
        self.switched.append(("off", device_id))
        self.fleet.device(device_id).go_silent()

    def power_on(self, device_id: str) -> None:
        self.switched.append(("on", device_id))
        self.fleet.device(device_id).resume()


def _queued(device: SimDevice) -> Iterator[dict[str, object]]:
    """What a device has queued to publish, decoded."""
    while device.pending:
        message = device.next_message(NOW_MS)
        assert message is not None
        yield json.loads(message.payload)


def test_the_district_has_a_dozen_named_institutions_in_three_towns() -> None:
    institutions = SPEC.institutions
    assert len(institutions) == len(SITES) and 10 <= len(institutions) <= 14
    assert {i.town for i in institutions} == set(TOWNS) and len(TOWNS) == 3
    assert {InstitutionType.ELDERLY_CARE, InstitutionType.CHILD_WELFARE} <= {
        i.type for i in institutions
    }
    assert len({i.type for i in institutions}) >= 4
    assert all(re.fullmatch(r"[\u4e00-\u9fff0-9]+", i.name) for i in institutions)
    assert len({i.name for i in institutions}) == len(institutions)
    phones = [p.phone for i in institutions for p in (i.principal, i.safety_manager)]
    assert all(re.fullmatch(r"1[3589]\d{9}", phone) for phone in phones)
    assert 200 <= len(SPEC.devices) <= 400
    assert {d.kind for d in SPEC.devices} == set(DeviceKind)
    registry = RegistryFile.model_validate(registry_document(SPEC))  # importable as it is
    assert len(registry.devices) == len(SPEC.devices)
    assert all(d.location and d.location.room for d in registry.devices)


def test_the_district_is_the_same_every_time_and_grows_by_branches() -> None:
    assert district_fleet_spec(seed=3) == district_fleet_spec(seed=3)
    assert district_fleet_spec(seed=3) != district_fleet_spec(seed=4)
    bigger = district_fleet_spec(len(SITES) + 2, 100)
    names = [i.name for i in bigger.institutions]
    assert len(set(names)) == len(names) and names[-1].endswith("第2分院")
    assert len(bigger.devices) == 100
    with pytest.raises(ValueError, match="at least one institution"):
        district_fleet_spec(0, 10)


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS)
def test_every_scenario_has_a_cast_and_ordered_steps(scenario: Scenario) -> None:
    taken = Casting(SPEC).take(scenario)
    assert taken is not None
    institution, cast = taken
    assert all(device.institution == institution for device in cast)
    times = [step.at_s for step in scenario.script(cast)]
    assert times[0] == 0 and times == sorted(times) and len(set(times)) == len(times)
    assert scenario.duration_s(cast) == times[-1]
    assert scenario.title_zh and scenario.about_zh and scenario.about_en
    assert scenario.raises and all(isinstance(kind, AlertKind) for kind in scenario.raises)


def test_a_round_shows_everything_within_two_minutes_and_ends_before_the_next() -> None:
    casting = Casting(SPEC)
    policy = load_policy()
    # The step by which each has shown its alerts: the fire confirmed, the gas cleared.
    told = {"fire": 1, "gas_leak": 2, "offline": 0, "low_battery": 0, "fault": 0}
    assert set(told) == set(SCENARIOS) == {s.name for _, s in LINEUP}
    for offset, scenario in LINEUP:
        taken = casting.take(scenario)
        assert taken is not None
        steps = scenario.script(taken[1])
        shown = DEFAULT_LEAD_S + offset + steps[told[scenario.name]].at_s
        if scenario is SCENARIOS["offline"]:
            shown = DEFAULT_LEAD_S + offset + DEMO_OFFLINE_TICKET_S + LEDGER_TICK_S
            production = policy.rules[AlertKind.DEVICE_OFFLINE].delay.total_seconds()
            assert production > FIRST_MINUTES_S  # why the demo has a policy of its own
            assert steps[-1].at_s > DEMO_OFFLINE_TICKET_S + LEDGER_TICK_S  # still offline then
        assert shown <= FIRST_MINUTES_S, scenario.name
        assert offset + scenario.duration_s(taken[1]) < DEFAULT_INTERVAL_S, scenario.name


async def _play(name: str, speed: float = 10.0) -> tuple[FakeStage, tuple[str, ...], list[float]]:
    stage = FakeStage(SPEC)
    scenario = SCENARIOS[name]
    taken = Casting(SPEC).take(scenario)
    assert taken is not None
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    said: list[str] = []
    await perform(scenario, taken[1], stage, speed=speed, say=said.append, sleep=sleep)
    steps = scenario.script(taken[1])
    expected = [(b.at_s - a.at_s) / speed for a, b in zip((steps[0], *steps), steps, strict=False)]
    assert slept == pytest.approx(expected)
    assert len(said) == len(steps) and all(
        s.zh in line for s, line in zip(steps, said, strict=True)
    )
    return stage, tuple(d.id for d in taken[1]), slept


async def test_fire_two_detectors_of_one_zone_alarm_then_clear() -> None:
    stage, (first, second), _ = await _play("fire")
    a, b = SPEC.devices[stage.fleet.index_of(first)], SPEC.devices[stage.fleet.index_of(second)]
    assert (a.institution, a.zone) == (b.institution, b.zone) and a.id != b.id
    for device_id in (first, second):
        events = [m["type"] for m in _queued(stage.device(device_id)) if "type" in m]
        assert events == ["alarm", "alarm_clear"]


async def test_gas_leak_passes_both_levels_and_clears() -> None:
    stage, (detector,), _ = await _play("gas_leak")
    bodies = list(_queued(stage.device(detector)))
    levels = [float(str(m["gas_lel_pct"])) for m in bodies if "gas_lel_pct" in m]
    settings = AlertSettings()
    assert max(levels) >= settings.gas_critical_lel_pct
    peak = levels.index(max(levels))
    assert any(
        settings.gas_major_lel_pct <= v < settings.gas_critical_lel_pct for v in levels[:peak]
    )
    assert levels[-1] < THRESHOLDS["gas_lel_pct"]
    assert [m["type"] for m in bodies if "type" in m] == ["alarm", "alarm_clear"]


async def test_offline_low_battery_and_fault() -> None:
    stage, (silent,), _ = await _play("offline")
    assert stage.switched == [("off", silent), ("on", silent)]
    stage, (drained,), _ = await _play("low_battery")
    bodies = list(_queued(stage.device(drained)))
    batteries = [m["battery_pct"] for m in bodies if "battery_pct" in m]
    assert batteries[0] <= BATTERY_LOW_PCT < batteries[-1]  # type: ignore[operator]
    assert [m["type"] for m in bodies if "type" in m] == ["battery_low"]
    stage, (faulty,), _ = await _play("fault")
    events = [(m["type"], m.get("code")) for m in _queued(stage.device(faulty)) if "type" in m]
    assert events == [("fault", "sensor_fault"), ("fault_clear", "sensor_fault")]


async def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="speed"):
        await _play("fault", speed=0)


def test_casting_rotates_and_skips_busy_institutions() -> None:
    casting = Casting(SPEC)
    fault = SCENARIOS["fault"]
    taken = [casting.take(fault) for _ in range(3)]
    places = [t[0] for t in taken if t is not None]
    assert len(set(places)) == 3 and casting.busy == set(places)
    casting.release(places[0])
    assert places[0] not in casting.busy
    small = Casting(FleetSpec(SPEC.institutions[:1], ()))
    assert small.take(fault) is None  # no devices: nobody can play it


async def test_the_story_plays_rounds_in_different_institutions() -> None:
    stage = FakeStage(SPEC)
    played: list[str] = []
    story = Story(SPEC, stage, interval_s=300, speed=2000, lead_s=0, say=played.append)
    task = asyncio.create_task(story.run())
    await asyncio.sleep(0.25)  # a little more than one round (300 s / 2000)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert story.rounds == 2
    starts = [line for line in played if " @ " in line]
    first = {line.split(" @ ")[1] for line in starts if "#1 " in line}
    second = {line.split(" @ ")[1] for line in starts if "#2 " in line}
    assert len(first) == len(LINEUP) and second and not first & second


def test_a_scenario_of_simulate_has_devices_of_its_own() -> None:
    spec = scenario_fleet(SPEC, SCENARIOS["fire"])
    assert len(spec.institutions) == 1 and len(spec.devices) == 2
    ours = {d.id for d in SPEC.devices}
    assert all(d.id.endswith("-sim") and d.id not in ours for d in spec.devices)
    RegistryFile.model_validate(registry_document(spec))
    with pytest.raises(ValueError, match="gas_leak"):
        scenario_fleet(FleetSpec(SPEC.institutions, ()), SCENARIOS["gas_leak"])


def test_simulate_lists_the_scenarios_and_refuses_unknown_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = cli.list_scenarios()
    for scenario in SCENARIOS.values():
        assert scenario.name in text and scenario.title_zh in text and scenario.about_en in text
    parser = __import__("argparse").ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--scenario", "flood"])
    assert "invalid choice: 'flood'" in capsys.readouterr().err

"""The demo's story: scenarios played in turn, round after round, in different institutions.

`perform` plays one scenario's steps at a speed; `Story` starts a round of every scenario
(`LINEUP`) every `interval_s`, each in the next institution that can play it and is not busy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Final

from simulators.device import SimDevice
from simulators.fleet import Fleet, Simulation
from simulators.plan import RunStats, SimOptions
from simulators.registry import DeviceSpec, FleetSpec
from simulators.scenarios import FAULT, FIRE, GAS_LEAK, LOW_BATTERY, OFFLINE, Cast, Scenario, Stage

log = logging.getLogger("hazardwatch.simulators.story")

# (story seconds after the round starts, scenario): everything within the first two minutes.
LINEUP: Final = ((0.0, FIRE), (15.0, GAS_LEAK), (30.0, OFFLINE), (45.0, LOW_BATTERY), (60.0, FAULT))
DEFAULT_INTERVAL_S: Final = 300.0
DEFAULT_LEAD_S: Final = 10.0  # the fleet connects and says `online` first

Say = Callable[[str], None]
Sleep = Callable[[float], Awaitable[None]]


class SimulationStage:
    """A running Simulation as a scenario's stage."""

    def __init__(self, simulation: Simulation) -> None:
        self._simulation = simulation

    def device(self, device_id: str) -> SimDevice:
        """The running device with this id."""
        return self._simulation.fleet.device(device_id)

    def power_off(self, device_id: str) -> None:
        """The device falls silent and goes offline."""
        self._simulation.power_off(device_id)

    def power_on(self, device_id: str) -> None:
        """The device comes back."""
        self._simulation.power_on(device_id)


@dataclass(slots=True)
class Casting:
    """Picks the institution of each performance: in turn, never one that is busy."""

    spec: FleetSpec
    busy: set[str] = field(default_factory=set)
    _next: int = 0

    def take(self, scenario: Scenario) -> tuple[str, Cast] | None:
        """The next free institution that can play `scenario`, and its cast; marked busy."""
        order = [i.id for i in self.spec.institutions]
        for k in range(len(order)):
            institution = order[(self._next + k) % len(order)]
            if institution in self.busy:
                continue
            cast = scenario.cast(self.spec, institution)
            if cast is not None:
                self.busy.add(institution)
                self._next = (self._next + k + 1) % len(order)
                return institution, cast
        return None

    def release(self, institution: str) -> None:
        """The institution's performance is over."""
        self.busy.discard(institution)


def place(spec: FleetSpec, device: DeviceSpec) -> str:
    """Where a device hangs, as people say it: institution, building, floor, room."""
    names = {i.id: i.name for i in spec.institutions}
    where = f"{device.building}{device.floor}层{device.room}"
    return f"{names.get(device.institution, device.institution)} {where} ({device.id})"


async def perform(
    scenario: Scenario,
    cast: Cast,
    stage: Stage,
    *,
    speed: float = 1.0,
    say: Say = print,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Play the steps of `scenario` with `cast` on `stage`, `speed` times faster than written."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    done_s = 0.0
    for step in scenario.script(cast):
        await sleep(max(0.0, step.at_s - done_s) / speed)
        done_s = step.at_s
        step.act(stage)
        say(f"{scenario.title_zh} {scenario.name}: {step.zh} / {step.en}")


class Story:
    """Rounds of the lineup, one every `interval_s` (story seconds), until cancelled."""

    def __init__(
        self,
        spec: FleetSpec,
        stage: Stage,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        speed: float = 1.0,
        lead_s: float = DEFAULT_LEAD_S,
        say: Say = print,
        lineup: tuple[tuple[float, Scenario], ...] = LINEUP,
        zone: tzinfo | None = None,
    ) -> None:
        if interval_s <= 0 or speed <= 0 or lead_s < 0:
            raise ValueError("interval and speed must be positive, the lead not negative")
        self.spec = spec
        self.stage = stage
        self.interval_s = interval_s
        self.speed = speed
        self.lead_s = lead_s
        self.say = say
        self.lineup = lineup
        self.zone = zone  # the time zone of the narration's clock (None: the machine's)
        self.casting = Casting(spec)
        self.rounds = 0

    async def run(self) -> None:
        """Play rounds for ever (cancel to stop)."""
        await asyncio.sleep(self.lead_s / self.speed)
        async with asyncio.TaskGroup() as group:
            while True:
                self.rounds += 1
                for offset, scenario in self.lineup:
                    group.create_task(
                        self._play(scenario, offset, self.rounds),
                        name=f"story-{self.rounds}-{scenario.name}",
                    )
                await asyncio.sleep(self.interval_s / self.speed)

    async def _play(self, scenario: Scenario, offset_s: float, round_no: int) -> None:
        await asyncio.sleep(offset_s / self.speed)
        taken = self.casting.take(scenario)

        def say(text: str) -> None:
            now = datetime.now(self.zone)
            self.say(f"{now:%H:%M:%S} 剧情 story #{round_no} {text}")

        if taken is None:
            say(
                f"{scenario.name}: 没有空闲且有合适设备的机构 / no free institution has the devices"
            )
            return
        institution, cast = taken
        try:
            say(f"{scenario.title_zh} {scenario.name} @ {place(self.spec, cast[0])}")
            await perform(scenario, cast, self.stage, speed=self.speed, say=say)
        except Exception:  # one scenario's failure must not end the demo or the other ones
            log.exception("scenario %s in %s failed", scenario.name, institution)
        finally:
            self.casting.release(institution)


CONNECT_WAIT_S: Final = 10.0
TAIL_S: Final = 2.0  # after the last step, for its messages to be sent and acknowledged


def scenario_fleet(spec: FleetSpec, scenario: Scenario) -> FleetSpec:
    """The institution that plays `scenario` first and its cast, with ids of their own
    (`…-sim`): a running demo's devices of the same name would contradict them."""
    taken = Casting(spec).take(scenario)
    if taken is None:
        raise ValueError(f"no institution of the fleet has the devices {scenario.name} needs")
    institution, cast = taken
    devices = tuple(replace(device, id=f"{device.id}-sim") for device in cast)
    return FleetSpec(tuple(i for i in spec.institutions if i.id == institution), devices)


async def play_scenario(
    options: SimOptions,
    scenario: Scenario,
    spec: FleetSpec,
    *,
    speed: float = 1.0,
    say: Say = print,
) -> RunStats:
    """Connect the scenario's devices (from `scenario_fleet`), play it, disconnect cleanly;
    raise ConnectionError when the broker cannot be reached."""
    fleet = Fleet(spec, seed=options.seed, prefix=options.prefix)
    # The devices live on after the scenario: no `offline` at the end, and client ids that
    # do not take over a running fleet's connections.
    rate = max(0.5, len(spec.devices) / 2)
    own = replace(options, devices=len(spec.devices), rate=rate, farewell=False)
    simulation = Simulation(replace(own, client_prefix=f"hwscn-{os.getpid()}-"), fleet)
    stop = asyncio.Event()
    running = asyncio.create_task(simulation.run(stop), name="scenario-fleet")
    deadline = asyncio.get_running_loop().time() + CONNECT_WAIT_S
    while not simulation.connected:
        if running.done() or asyncio.get_running_loop().time() > deadline:
            stop.set()
            await running
            raise ConnectionError(
                f"cannot connect to the broker {options.broker} within {CONNECT_WAIT_S:g} s"
            )
        await asyncio.sleep(0.05)
    try:
        say(f"{scenario.title_zh} {scenario.name} @ {place(spec, spec.devices[0])}")
        await perform(scenario, spec.devices, SimulationStage(simulation), speed=speed, say=say)
        await asyncio.sleep(TAIL_S)
    finally:
        stop.set()
    return await running

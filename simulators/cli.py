"""`hazardwatch simulate`: options and the entry point (wired in by `hazardwatch.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from core.errors import ConfigError
from simulators.district import district_fleet_spec
from simulators.fleet import Simulation
from simulators.mqtt import BrokerURL
from simulators.payloads import DEFAULT_PREFIX
from simulators.plan import SimOptions
from simulators.registry import build_fleet_spec, heartbeat_for, write_registry
from simulators.scenarios import SCENARIOS
from simulators.story import play_scenario, scenario_fleet
from simulators.workers import run_workers


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser, *, standalone: bool = True) -> None:
    """Add the `simulate` options to a parser.

    `standalone=False` (the demo): no --broker, --prefix or --processes, because the fleet
    then talks to the service's own broker, on the topics the service subscribes to, from
    the service's process.
    """
    default_broker = os.environ.get("HAZARDWATCH_MQTT_URL", "mqtt://127.0.0.1:1883")
    add = parser.add_argument
    if standalone:
        add("--broker", default=default_broker, metavar="URL",
            help="mqtt://user:pass@host:port or mqtts://… (default: $HAZARDWATCH_MQTT_URL or "
            "%(default)s)")  # fmt: skip
    add(
        "--institutions",
        type=_positive_int,
        default=3,
        metavar="N",
        help="institutions (default %(default)s)",
    )
    add(
        "--devices",
        type=_count,
        default=12,
        metavar="M",
        help="devices in total (default %(default)s)",
    )
    add("--rate", type=_positive_float, default=2.0, metavar="R",
        help="messages per second, all devices together (default %(default)s)")  # fmt: skip
    add("--seed", type=int, default=1, metavar="S", help="same seed, same fleet (default 1)")
    if standalone:
        add("--prefix", default=DEFAULT_PREFIX, help="topic prefix (default %(default)s)")
    add("--duration", type=_positive_float, metavar="SECONDS", help="stop after this long")
    add("--count", type=_count, metavar="MESSAGES", help="stop after this many paced messages")
    add("--malformed", type=_fraction, default=0.0, metavar="FRACTION",
        help="share of messages replaced by bad input (default %(default)s)")  # fmt: skip
    add("--connections", type=_positive_int, metavar="K",
        help="share K connections between devices (no per-device last will; default: one "
        "connection per device up to 200 devices, else 8)")  # fmt: skip
    add("--qos", type=int, choices=(0, 1, 2), default=1, help="publish QoS (default 1)")
    if standalone:
        add("--processes", type=_positive_int, metavar="P",
            help="worker processes (default: one per 4,000 msg/s, at most the CPUs and 4)",
        )  # fmt: skip
    add("--export-registry", type=Path, metavar="FILE",
        help="write the fleet as a YAML registry file and exit")  # fmt: skip
    if standalone:
        _scenario_arguments(parser)


def _scenario_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--scenario", choices=sorted(SCENARIOS), metavar="NAME",
        help="play one named scenario (see --list) with devices of its own, then stop")  # fmt: skip
    add("--list", action="store_true", help="name and describe the scenarios, and exit")
    add("--speed", type=_positive_float, default=1.0, metavar="FACTOR",
        help="play the scenario this many times faster (default 1)")  # fmt: skip
    add("--username", metavar="NAME", help="MQTT user name (instead of the one in the URL)")
    add("--password-stdin", action="store_true",
        help="read the MQTT password from the first line of stdin")  # fmt: skip


def list_scenarios() -> str:
    """Every scenario: name, titles, what happens, in Chinese and English."""
    lines = []
    for scenario in SCENARIOS.values():
        kinds = ", ".join(scenario.raises)
        lines += [
            f"{scenario.name:<12} {scenario.title_zh} / {scenario.title_en}   [{kinds}]",
            f"{'':<12} {scenario.about_zh}",
            f"{'':<12} {scenario.about_en}",
        ]
    return "\n".join(lines)


def _broker(args: argparse.Namespace) -> BrokerURL:
    broker = BrokerURL.parse(args.broker)
    if getattr(args, "username", None):
        broker = replace(broker, username=args.username)
    if getattr(args, "password_stdin", False):
        broker = replace(broker, password=sys.stdin.readline().rstrip("\r\n"))
    return broker


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """Validated options; raises ConfigError for a bad broker URL."""
    return SimOptions(
        broker=_broker(args),
        institutions=args.institutions,
        devices=args.devices,
        rate=args.rate,
        seed=args.seed,
        prefix=args.prefix.strip("/"),
        duration=args.duration,
        count=args.count,
        malformed=args.malformed,
        connections=args.connections,
        qos=args.qos,
        processes=args.processes,
    )


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def export_fleet(args: argparse.Namespace) -> int:
    """Write the fleet the options describe as a registry file."""
    heartbeat = heartbeat_for(args.devices, args.rate, args.malformed)
    spec = build_fleet_spec(args.institutions, args.devices, args.seed, heartbeat_s=heartbeat)
    write_registry(spec, args.export_registry)
    print(
        f"simulate: wrote {len(spec.institutions)} institutions and {len(spec.devices)} devices "
        f"to {args.export_registry}"
    )
    return 0


async def play(args: argparse.Namespace, options: SimOptions) -> int:
    """Play the scenario of `--scenario` against the broker; 0 when done, 2 if unreachable."""
    scenario = SCENARIOS[args.scenario]
    spec = scenario_fleet(district_fleet_spec(seed=args.seed), scenario)
    try:
        stats = await play_scenario(options, scenario, spec, speed=args.speed)
    except ConnectionError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    print(stats.summary())
    return 0


def _export_scenario(args: argparse.Namespace) -> int:
    spec = scenario_fleet(district_fleet_spec(seed=args.seed), SCENARIOS[args.scenario])
    write_registry(spec, args.export_registry)
    print(f"simulate: wrote the {args.scenario} scenario's devices to {args.export_registry}")
    return 0


async def run(args: argparse.Namespace) -> int:
    """Run the simulators (or export the registry); 0 on success, 2 on bad options."""
    scenario = getattr(args, "scenario", None)
    if getattr(args, "list", False):
        print(list_scenarios())
        return 0
    try:
        if args.export_registry is not None:
            export = _export_scenario if scenario else export_fleet
            return await asyncio.to_thread(export, args)
        options = options_from_args(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    if scenario is not None:
        return await play(args, options)
    stop = asyncio.Event()
    shares = options.shares()
    with _stop_on_signals(stop):
        if len(shares) > 1:
            stats = await run_workers(shares, stop)
        else:
            stats = await Simulation(options).run(stop)
    print(stats.summary())
    return 0

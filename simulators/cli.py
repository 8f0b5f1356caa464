"""`hazardwatch simulate`: options and the entry point (wired in by `hazardwatch.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from core.errors import ConfigError
from simulators.fleet import Simulation
from simulators.mqtt import BrokerURL
from simulators.payloads import DEFAULT_PREFIX
from simulators.plan import SimOptions
from simulators.registry import build_fleet_spec, heartbeat_for, write_registry
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


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """Validated options; raises ConfigError for a bad broker URL."""
    return SimOptions(
        broker=BrokerURL.parse(args.broker),
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


async def run(args: argparse.Namespace) -> int:
    """Run the simulators (or export the registry); 0 on success, 2 on bad options."""
    try:
        if args.export_registry is not None:
            return await asyncio.to_thread(export_fleet, args)
        options = options_from_args(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    shares = options.shares()
    with _stop_on_signals(stop):
        if len(shares) > 1:
            stats = await run_workers(shares, stop)
        else:
            stats = await Simulation(options).run(stop)
    print(stats.summary())
    return 0

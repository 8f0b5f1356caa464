"""The options of `hazardwatch demo` beyond the simulator's: its address and its story."""

from __future__ import annotations

import argparse

from simulators.district import DEFAULT_DEVICES, DEFAULT_INSTITUTIONS
from simulators.story import DEFAULT_INTERVAL_S


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return port


def _host(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the address is empty: e.g. 127.0.0.1 or 0.0.0.0")
    return text.strip()


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400 * 365:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def add_demo_options(demo: argparse.ArgumentParser) -> None:
    """The demo's own options: its address and its story."""
    add = demo.add_argument
    add(
        "--host",
        type=_host,
        help="address of the HTTP API and console (default: HAZARDWATCH_API_HOST)",
    )
    add(
        "--port",
        type=_port,
        help="port of the HTTP API and console (default: HAZARDWATCH_API_PORT)",
    )
    add("--no-story", action="store_true", help="no scenarios: only the fleet's own traffic")
    add("--story-interval", type=_positive, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
        help="a round of scenarios every this many story seconds (default %(default)g)",
    )  # fmt: skip
    add("--story-speed", type=_positive, default=1.0, metavar="FACTOR",
        help="the story runs this many times faster: waits and intervals divided (default 1)",
    )  # fmt: skip
    add("--offline-ticket-after", type=_positive, default=60.0, metavar="SECONDS",
        help="in the demo's ticket policy, an offline detector's ticket opens after this "
        "(production: 30 minutes; default %(default)g)")  # fmt: skip
    # The district (a dozen institutions, a few hundred detectors) and a little bad input,
    # to show dead letters.
    demo.set_defaults(
        institutions=DEFAULT_INSTITUTIONS, devices=DEFAULT_DEVICES, rate=10.0, malformed=0.01
    )

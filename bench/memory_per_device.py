"""Memory that ingest keeps per known device, with 100,000 distinct devices.

Messages go through the real receive path (parser, registry with auto-registration, duplicate
window, presence, group commit to the spool) without a broker, so the figure is what the
service itself holds: Python allocations traced by tracemalloc, and the process RSS.

    .venv/bin/python -m bench.memory_per_device [--devices 100000]

Two figures: after one status and one reading per device (a fleet just heard from), and, on
a sample of devices, after enough readings to fill each device's duplicate window (steady
state), which is the figure to plan memory with.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from bench.machine import describe
from core.db import make_engine, session_factory, upgrade
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from core.settings import parse_mqtt_url
from ingest.dedupe import WINDOW_PER_DEVICE
from ingest.messages import RawMessage
from ingest.sinks.embedded import EmbeddedSink
from ingest.stage import IngestStage

PREFIX = "hazardwatch/v1"


def _stage(work: Path) -> IngestStage:
    url = f"sqlite:///{work / 'registry.sqlite'}"
    upgrade(url)
    directory = DeviceDirectory(
        RegistryRepository(session_factory(make_engine(url))), auto_register=True
    )
    stage = IngestStage(
        data_dir=work / "data",
        sink=EmbeddedSink(work / "ts.sqlite"),
        directory=directory,
        endpoint=parse_mqtt_url("mqtt://127.0.0.1:1"),  # never connected: no broker needed
    )
    return stage


def _feed(stage: IngestStage, devices: int, readings: int) -> None:
    now = datetime.now(UTC)
    for d in range(devices):
        base = f"{PREFIX}/inst-{d % 500:03d}/dev-{d:06d}"
        stage.receiver.handle(RawMessage(f"{base}/status", b"online", now, retained=True))
        for seq in range(readings):
            body = {"seq": seq, "kind": "smoke", "smoke_db_m": 0.02, "battery_pct": 87}
            stage.receiver.handle(RawMessage(f"{base}/telemetry", json.dumps(body).encode(), now))


def _rss() -> int:
    """Resident set size now, in bytes (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _measure(devices: int, readings: int) -> tuple[float, float]:
    """(traced bytes per device, RSS growth per device) after feeding `devices`."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = _stage(Path(tmp))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        rss_before = _rss()
        _feed(stage, devices, readings)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        rss = _rss() - rss_before
        stage.spool.close()
        stage.dead_letters.close()
        return traced / devices, rss / devices


def main() -> None:
    """Print bytes per device for a fleet just heard from, and at steady state."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=10_000, help="devices for steady state")
    args = parser.parse_args()
    print(describe())
    traced, rss = _measure(args.devices, 1)
    print(
        f"{args.devices:,} devices, 1 status + 1 reading each: "
        f"{traced:,.0f} B/device traced, {rss:,.0f} B/device RSS growth"
    )
    readings = WINDOW_PER_DEVICE + 1
    traced, rss = _measure(args.sample, readings)
    print(
        f"{args.sample:,} devices, 1 status + {readings} readings each (full duplicate window): "
        f"{traced:,.0f} B/device traced, {rss:,.0f} B/device RSS growth"
    )
    total = traced * args.devices / 2**20
    print(f"=> {args.devices:,} devices at steady state: about {total:,.0f} MiB")


if __name__ == "__main__":
    main()

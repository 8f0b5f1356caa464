"""Memory the service keeps per known device: ingestion and the alert engine, at fleet scale.

N devices each send one retained `online` status and one reading (with `seq`, without `ts`)
through the real receive path — parser, registry with auto-registration, duplicate check,
restamping, presence, points spool — and the alert engine's `observe` (rules, silence wheel),
as the service wires them. Receive times are spread over 300 s, a heartbeat's worth of fleet.
Each fleet size runs in a fresh process, so that one run's freed memory cannot hide the next
one's growth:

    .venv/bin/python -m bench.memory_per_device [--devices 100000,1000000] [--traced 100000]

Resident bytes per device = (RSS after feeding − RSS before) / N, both after gc.collect() and
with the registry writer drained. tracemalloc slows the feed and keeps memory of its own, so
its figures come from separate runs (`--traced`), with the source files that hold the most.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts.engine import AlertEngine
from alerts.events import Change
from alerts.store import AlertStore
from bench.machine import describe
from core.db import make_engine, session_factory, upgrade
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from core.settings import AlertSettings, parse_mqtt_url
from ingest.messages import Accepted, RawMessage
from ingest.sinks.embedded import EmbeddedSink
from ingest.stage import IngestStage

PREFIX = "hazardwatch/v1"
SPREAD_S = 300.0  # receive times of the fleet spread over one default heartbeat
SPOOL_BATCH = 2000  # records per points-spool append, as the digester writes them
READING = {"seq": 1, "kind": "smoke", "smoke_db_m": 0.02, "battery_pct": 87}


class NullWriter:
    """The engine's change writer, reduced to its interface: nothing is raised here anyway."""

    def __init__(self) -> None:
        self.batches = 0

    def submit(self, changes: list[Change], lsn: int | None) -> None:
        """Count the batch; store nothing."""
        self.batches += 1

    def flush(self) -> int:
        """Everything is "durable" at once."""
        return self.batches


@dataclass
class Service:
    """The parts of the service that keep per-device state."""

    stage: IngestStage
    engine: AlertEngine


def _stage(work: Path) -> IngestStage:
    """The ingest stage on a fresh SQLite registry, auto-registering (bench.ingest_profile too)."""
    url = f"sqlite:///{work / 'hazardwatch.sqlite'}"
    upgrade(url)
    directory = DeviceDirectory(
        RegistryRepository(session_factory(make_engine(url))), auto_register=True
    )
    return IngestStage(
        data_dir=work / "data",
        sink=EmbeddedSink(work / "ts.sqlite"),
        directory=directory,
        endpoint=parse_mqtt_url("mqtt://127.0.0.1:1"),  # never connected: no broker needed
    )


def _build(work: Path) -> Service:
    stage = _stage(work)
    directory = stage.directory
    sql = make_engine(f"sqlite:///{work / 'hazardwatch.sqlite'}")
    engine = AlertEngine(AlertSettings(), directory, AlertStore(sql), NullWriter())

    def observe(accepted: Accepted) -> None:  # as hazardwatch/service.py wires it
        engine.observe(accepted.message, accepted.raw.received_at, accepted.raw.lsn)

    stage.receiver.add_listener(observe)
    return Service(stage, engine)


def _feed(service: Service, devices: int) -> None:
    """One retained status and one reading per device, through the receive path."""
    handle = service.stage.receiver.handle
    start = datetime.now(UTC) - timedelta(seconds=SPREAD_S)
    reading = json.dumps(READING).encode()
    bodies: list[bytes] = []
    lsn = 0
    for d in range(devices):
        at = start + timedelta(seconds=SPREAD_S * d / devices)
        base = f"{PREFIX}/inst-{d % 500:03d}/dev-{d:07d}"
        for topic, payload, retained in ((f"{base}/status", b"online", True),
                                         (f"{base}/telemetry", reading, False)):  # fmt: skip
            lsn += 1
            outcome = handle(RawMessage(topic, payload, at, retained=retained, lsn=lsn), lsn)
            if outcome is not None:
                bodies.append(outcome[0])
        if len(bodies) >= SPOOL_BATCH:
            service.stage.spool.append(bodies)
            bodies.clear()
            service.stage.directory.write_pending()  # as the registry writer task keeps up
    if bodies:
        service.stage.spool.append(bodies)


def _drain_registry(service: Service) -> None:
    """Store every auto-registration still waiting, as the registry writer task would."""
    while service.stage.directory.write_pending():
        pass


def _rss() -> int:
    """Resident set size now, in bytes (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _close(service: Service) -> None:
    service.stage.spool.close()
    service.stage.dead_letters.close()
    service.stage.sink.close()


def run_one(devices: int, traced: bool) -> dict[str, object]:
    """Feed `devices` in this process; the figures as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        service = _build(Path(tmp))
        gc.collect()
        if traced:
            tracemalloc.start()
            before_snapshot = tracemalloc.take_snapshot()
        rss_before = _rss()
        began = time.perf_counter()
        _feed(service, devices)
        fed_s = time.perf_counter() - began
        _drain_registry(service)
        gc.collect()
        result: dict[str, object] = {"devices": devices, "fed_s": round(fed_s, 1)}
        if traced:
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            diffs = snapshot.compare_to(before_snapshot, "filename")
            result["traced_per_device"] = sum(d.size_diff for d in diffs) / devices
            result["top"] = [
                (d.traceback[0].filename, d.size_diff / devices)
                for d in sorted(diffs, key=lambda d: -d.size_diff)[:8]
            ]
        else:
            result["rss_per_device"] = (_rss() - rss_before) / devices
            result["engine_rule_states"] = service.engine.stats()["devices"]
        _close(service)
        return result


def _short(filename: str) -> str:
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    return filename.removeprefix(root).rsplit("site-packages" + os.sep, 1)[-1]


def _child(devices: int, traced: bool) -> dict[str, object]:
    """Run one measurement in a fresh interpreter."""
    command = [sys.executable, "-m", "bench.memory_per_device", "--one", str(devices)]
    if traced:
        command.append("--trace")
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _report(result: dict[str, object]) -> None:
    devices = int(str(result["devices"]))
    if "rss_per_device" in result:
        rss = float(str(result["rss_per_device"]))
        print(
            f"{devices:>9,} devices: {rss:7,.0f} B/device resident "
            f"({rss * devices / 2**20:,.0f} MiB; fed in {result['fed_s']} s; "
            f"engine rule states kept: {result['engine_rule_states']:,})"
        )
        return
    traced = float(str(result["traced_per_device"]))
    print(f"{devices:>9,} devices: {traced:7,.0f} B/device traced by tracemalloc, largest:")
    for filename, size in result["top"]:  # type: ignore[attr-defined]
        print(f"{'':>12}{size:7,.0f} B  {_short(filename)}")


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main() -> None:
    """Print resident (and traced) bytes per device for each fleet size."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", default="100000,1000000", help="fleet sizes, comma-separated")
    parser.add_argument("--traced", default="100000", help="fleet sizes to trace ('' for none)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.trace)))
        return
    print(describe())
    print("one retained status + one reading per device; ingest and the alert engine")
    for devices in _sizes(args.devices):
        _report(_child(devices, traced=False))
    for devices in _sizes(args.traced):
        _report(_child(devices, traced=True))


if __name__ == "__main__":
    main()

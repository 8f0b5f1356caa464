"""Where ingest's time goes: the edge process's loop and the digester, under cProfile.

Edge: messages queued in a real Mosquitto for a persistent session are drained by the edge's
loop run in this process (raw spool, fdatasync, PUBACK), beside a bare paho subscriber
draining the same number in the same run.

Digester: without the network.
The same messages as `bench.ingest_throughput`, as raw spool records, go through what the
digester thread does with each batch from the edge process (decode, parse, validate, registry,
duplicates, listeners, encode, append to the points spool with fdatasync). Prints the rate of
the digester alone, with and without the profiler, and the functions that cost most.

    .venv/bin/python -m bench.ingest_profile [--messages 200000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time
import time as clock
from pathlib import Path

from bench.ingest_throughput import DEVICES, payload, queue_for, raw_broker
from bench.machine import describe
from bench.memory_per_device import _stage
from core.health import Component
from core.settings import parse_mqtt_url
from ingest.edge import Edge, EdgeConfig, encode_raw
from ingest.stage import DIGEST_BATCH
from tests.servers import Mosquitto


def _messages(count: int) -> list[tuple[int, bytes]]:
    now = clock.time_ns() // 1_000_000
    return [
        (
            i + 1,
            encode_raw(
                now,
                False,
                False,
                f"hazardwatch/v1/inst-{i % 50:03d}/dev-{i % DEVICES:04d}/telemetry".encode(),
                payload(i),
            ),
        )
        for i in range(count)
    ]


def _run(messages: list[tuple[int, bytes]], profile: cProfile.Profile | None) -> float:
    """Digested messages per second, until every one is durable in the points spool."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = _stage(Path(tmp))
        start = time.perf_counter()
        if profile is not None:
            profile.enable()
        for offset in range(0, len(messages), DIGEST_BATCH):
            stage._digest(messages[offset : offset + DIGEST_BATCH], Component("digester"))
        if profile is not None:
            profile.disable()
        rate = len(messages) / (time.perf_counter() - start)
        assert stage.spool.committed_lsn == len(messages)
        stage.spool.close()
        stage.dead_letters.close()
        return rate


class _DrainingEdge(Edge):
    """The edge, stopping once `count` records are durable."""

    def __init__(self, config: EdgeConfig, count: int) -> None:
        super().__init__(config, status=os.open(os.devnull, os.O_WRONLY))
        self.count = count
        self.done_at = 0.0

    def _commit(self) -> None:
        super()._commit()
        if self._spool.committed_lsn >= self.count and not self.done_at:
            self.done_at = time.perf_counter()
            self.stop()


def _edge(work: Path, count: int, profile: cProfile.Profile) -> None:
    broker = Mosquitto(work / "mosquitto").start()
    try:
        print(f"bare paho subscriber:  {raw_broker(broker, count):>9,.0f} msg/s")
        runs: tuple[tuple[str, cProfile.Profile | None], ...] = (
            ("no profiler", None),
            ("cProfile   ", profile),
        )
        for label, prof in runs:
            client_id = f"edge-{label[:2]}"
            prefix = f"{client_id}/hazardwatch/v1"
            queue_for(broker, client_id, prefix, count)
            endpoint = parse_mqtt_url(broker.url)
            config = EdgeConfig(
                host=endpoint.host,
                port=endpoint.port,
                client_id=client_id,
                topics=[f"{prefix}/#"],
                spool_dir=str(work / client_id),
                parent_pid=os.getppid(),
            )
            edge = _DrainingEdge(config, count)
            start = time.perf_counter()
            if prof is not None:
                prof.enable()
            edge.run()
            if prof is not None:
                prof.disable()
            print(f"edge, {label}:     {count / (edge.done_at - start):>9,.0f} msg/s durable+acked")
    finally:
        broker.stop()


def _print(profile: cProfile.Profile, top: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    print(out.getvalue())


def main() -> None:
    """Print the digester's rate and the profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(describe())
    edge_profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        _edge(Path(tmp), min(args.messages, 100_000), edge_profile)
    _print(edge_profile, args.top)
    messages = _messages(args.messages)
    print(f"digester, no profiler: {_run(messages, None):>9,.0f} msg/s durable in the spool")
    profile = cProfile.Profile()
    print(f"digester, cProfile:    {_run(messages, profile):>9,.0f} msg/s")
    _print(profile, args.top)


if __name__ == "__main__":
    main()

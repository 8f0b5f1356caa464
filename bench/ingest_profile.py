"""Where ingest's time goes: the receive path under cProfile, without the network.

The same messages as `bench.ingest_throughput` go through the receive path that paho's network
thread runs for each message (parse, validate, registry, duplicates, encode, hand to the group
commit), with the spool writing and fsyncing in its thread as in production. Prints the rate
of the receive path alone, with and without the profiler, and the functions that cost most.

    .venv/bin/python -m bench.ingest_profile [--messages 200000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.ingest_throughput import DEVICES, payload
from bench.machine import describe
from bench.memory_per_device import _stage
from ingest.messages import RawMessage


def _messages(count: int) -> list[RawMessage]:
    now = datetime.now(UTC)
    return [
        RawMessage(
            f"hazardwatch/v1/inst-{i % 50:03d}/dev-{i % DEVICES:04d}/telemetry", payload(i), now
        )
        for i in range(count)
    ]


def _run(messages: list[RawMessage], profile: cProfile.Profile | None) -> float:
    """Receive-path messages per second, until every message is durable in the spool."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = _stage(Path(tmp))
        handle = stage.receiver.handle
        start = time.perf_counter()
        if profile is not None:
            profile.enable()
        for raw in messages:
            handle(raw, None)
        if profile is not None:
            profile.disable()
        stage.committer.stop()
        rate = len(messages) / (time.perf_counter() - start)
        assert stage.spool.committed_lsn == len(messages)
        stage.directory.stop()
        stage.spool.close()
        stage.dead_letters.close()
        return rate


def main() -> None:
    """Print the receive-path rate and the profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(describe())
    messages = _messages(args.messages)
    print(f"receive path, no profiler: {_run(messages, None):>9,.0f} msg/s durable in the spool")
    profile = cProfile.Profile()
    print(f"receive path, cProfile:    {_run(messages, profile):>9,.0f} msg/s")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()

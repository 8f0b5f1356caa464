"""Where ingest's time goes: the digester under cProfile, without the network.

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
import pstats
import tempfile
import time
import time as clock
from pathlib import Path

from bench.ingest_throughput import DEVICES, payload
from bench.machine import describe
from bench.memory_per_device import _stage
from ingest.edge import encode_raw
from ingest.stage import DIGEST_BATCH


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
            stage._digest(messages[offset : offset + DIGEST_BATCH])
        if profile is not None:
            profile.disable()
        rate = len(messages) / (time.perf_counter() - start)
        assert stage.spool.committed_lsn == len(messages)
        stage.directory.stop()
        stage.spool.close()
        stage.dead_letters.close()
        return rate


def main() -> None:
    """Print the digester's rate and the profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(describe())
    messages = _messages(args.messages)
    print(f"digester, no profiler: {_run(messages, None):>9,.0f} msg/s durable in the spool")
    profile = cProfile.Profile()
    print(f"digester, cProfile:    {_run(messages, profile):>9,.0f} msg/s")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()

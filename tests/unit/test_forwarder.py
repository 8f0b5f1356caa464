"""The forwarder: a store that fails or refuses loses nothing and doubles nothing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest

from core.errors import StoreError
from core.health import Component, State
from core.journal import Journal
from core.points import Point
from ingest.deadletters import DeadLetterStore
from ingest.forwarder import Forwarder
from ingest.metrics import IngestMetrics
from ingest.records import DeadLetter, encode_dead_letter, encode_points


class FlakySink:
    """Keeps points like InfluxDB (one per measurement, tags and time); fails on request."""

    name = "flaky"

    def __init__(self) -> None:
        self.points: dict[tuple[object, ...], Point] = {}
        self.arrivals: list[int] = []
        self.down = threading.Event()
        self.refuse_time_ms: set[int] = set()
        self.failures = 0
        self.fail_after_single_writes: int | None = None

    def write(self, points: Sequence[Point]) -> None:
        if len(points) == 1 and self.fail_after_single_writes is not None:
            if self.fail_after_single_writes == 0:
                self.down.set()  # the store goes away in the middle of the one-by-one pass
            self.fail_after_single_writes -= 1
        if self.down.is_set():
            self.failures += 1
            raise StoreError("connection refused", retryable=True)
        if any(p.time_ms in self.refuse_time_ms for p in points):
            raise StoreError("HTTP 400: field type conflict", retryable=False)
        for p in points:
            self.points[(p.measurement, tuple(sorted(p.tags.items())), p.time_ms)] = p
            self.arrivals.append(p.time_ms)

    def ping(self) -> bool:
        return not self.down.is_set()

    def close(self) -> None:
        pass


def _point(i: int) -> Point:
    tags = {"institution": "i1", "device": f"d{i % 7}", "kind": "smoke"}
    return Point("reading", tags, {"smoke_db_m": 0.01, "seq": i}, 1_763_798_400_000 + i)


RECEIVED_MS = 1_795_000_000_000


def _spool_points(spool: Journal, start: int, count: int) -> None:
    spool.append(
        [
            encode_points(f"d{i % 7}", i, RECEIVED_MS + i, [_point(i)])
            for i in range(start, start + count)
        ]
    )


async def _wait(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if condition():
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Running:
    """A forwarder as the supervisor runs it: a task, with its report card."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.component = Component("forwarder", depends_on="store")
        self.task = asyncio.create_task(forwarder.run(self.component))

    async def stop(self, drain_s: float = 10.0) -> None:
        await self.forwarder.drain(drain_s)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics]:
    return (
        Journal(tmp_path / "spool"),
        FlakySink(),
        DeadLetterStore(tmp_path / "dl.sqlite"),
        IngestMetrics(),
    )


def _forwarder(parts: tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics]) -> Forwarder:
    spool, sink, dead, metrics = parts
    return Forwarder(
        spool, sink, dead, metrics, batch_records=100, linger_s=0.01, backoff_s=(0.01, 0.05)
    )


async def test_everything_spooled_reaches_the_store_once_and_in_order(
    parts: tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics],
) -> None:
    spool, sink, _, metrics = parts
    forwarder = Running(_forwarder(parts))
    _spool_points(spool, 0, 1000)
    await _wait(lambda: spool.checkpoint_lsn == 1000)
    await forwarder.stop()
    assert len(sink.points) == 1000
    assert sink.arrivals == sorted(sink.arrivals) and len(sink.arrivals) == 1000
    assert metrics.value("hazardwatch_points_stored_total") == 1000


async def test_an_outage_fills_the_spool_and_drains_it_when_the_store_returns(
    parts: tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics],
) -> None:
    spool, sink, _, metrics = parts
    forwarder = Running(_forwarder(parts))
    _spool_points(spool, 0, 300)
    await _wait(lambda: spool.checkpoint_lsn == 300)
    sink.down.set()
    _spool_points(spool, 300, 2000)
    await _wait(lambda: sink.failures >= 5)
    assert spool.checkpoint_lsn == 300, "nothing may be checkpointed while the store is down"
    assert not forwarder.forwarder.store_healthy
    assert forwarder.component.state()[0] is State.DEGRADED, "the outage is shown"
    sink.down.clear()
    await _wait(lambda: spool.checkpoint_lsn == 2300)
    await forwarder.stop()
    assert len(sink.points) == 2300
    assert len(sink.arrivals) == 2300, "no point written twice"
    assert sink.arrivals == sorted(sink.arrivals), "order kept across the outage"
    assert metrics.value("hazardwatch_store_write_errors_total") >= 5


async def test_a_restart_resumes_from_the_checkpoint(
    parts: tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics], tmp_path: Path
) -> None:
    spool, sink, dead, metrics = parts
    sink.down.set()
    first = Running(_forwarder(parts))
    _spool_points(spool, 0, 500)
    await _wait(lambda: sink.failures >= 2)
    await first.stop(drain_s=0.1)
    spool.close()
    reopened = Journal(tmp_path / "spool")
    assert reopened.committed_lsn == 500 and reopened.checkpoint_lsn == 0
    sink.down.clear()
    second = Running(Forwarder(reopened, sink, dead, metrics, batch_records=100, linger_s=0.01))
    await _wait(lambda: reopened.checkpoint_lsn == 500)
    await second.stop()
    assert len(sink.points) == 500 and len(sink.arrivals) == 500


async def test_points_the_store_refuses_become_dead_letters_and_the_rest_is_stored(
    parts: tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics],
) -> None:
    spool, sink, dead, _ = parts
    sink.refuse_time_ms = {1_763_798_400_000 + 42}
    forwarder = Running(_forwarder(parts))
    _spool_points(spool, 0, 100)
    await _wait(lambda: spool.checkpoint_lsn == 100)
    await forwarder.stop()
    assert len(sink.points) == 99
    letters = dead.list(reason="store_rejected")
    assert len(letters) == 1
    letter = letters[0][1]
    assert letter.device == "d0"  # 42 % 7
    assert letter.received_ms == RECEIVED_MS + 42, "when the message came, not its ts"
    assert orjson.loads(letter.payload) == _point(42).to_wire()


async def test_a_store_that_goes_away_during_the_one_by_one_pass_dead_letters_nothing(
    parts: tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics],
) -> None:
    spool, sink, dead, metrics = parts
    sink.refuse_time_ms = {1_763_798_400_000 + 42}
    sink.fail_after_single_writes = 10
    forwarder = Running(_forwarder(parts))
    _spool_points(spool, 0, 100)
    await _wait(lambda: sink.failures >= 2)  # retrying the whole batch, not dead-lettering
    assert spool.checkpoint_lsn == 0
    assert dead.counts() == {}
    sink.fail_after_single_writes = None
    sink.down.clear()
    await _wait(lambda: spool.checkpoint_lsn == 100)
    await forwarder.stop()
    assert len(sink.points) == 99
    assert dead.counts() == {"store_rejected": 1}
    assert metrics.value("hazardwatch_messages_dead_lettered_total", reason="store_rejected") == 1


async def test_dead_letters_are_stored_once_even_when_replayed(
    parts: tuple[Journal, FlakySink, DeadLetterStore, IngestMetrics],
) -> None:
    spool, _, dead, _ = parts
    letter = DeadLetter(
        1, "hazardwatch/v1/i/d/telemetry", "bad_json", "not JSON", b"{", 1, "i", "d"
    )
    spool.append([encode_dead_letter("d", 1, letter), encode_dead_letter("d", 2, letter)])
    forwarder = Running(_forwarder(parts))
    await _wait(lambda: spool.checkpoint_lsn == 2)
    await forwarder.stop()
    dead.add_many([(1, letter)])  # a replay of LSN 1
    assert dead.counts() == {"bad_json": 2}

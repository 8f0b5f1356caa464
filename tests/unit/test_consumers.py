"""Feeding a consumer from the event log: in order, from its checkpoint, retrying failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from core.consumers import Consumer, feed
from core.eventlog import ALERT, JournalEventLog, LogEvent, NewEvent
from core.health import Component, State
from core.retry import Backoff


def event(n: int) -> NewEvent:
    return NewEvent(ALERT, f"dev-{n}", "inst-1", b'{"n": %d}' % n)


class Recorder:
    """A consumer that fails on the events it is told to, a given number of times."""

    name = "recorder"

    def __init__(self, start: int = 0) -> None:
        self.position = start
        self.seen: list[int] = []
        self.fail_on: dict[int, int] = {}  # position -> failures left
        self.load_failures = 0

    def load(self) -> None:
        if self.load_failures:
            self.load_failures -= 1
            raise ConnectionError("the database is away")

    def handle(self, events: Sequence[LogEvent]) -> None:
        for event in events:
            left = self.fail_on.get(event.position, 0)
            if left:
                self.fail_on[event.position] = left - 1
                raise ConnectionError(f"refused {event.position}")
            self.seen.append(event.position)
            self.position = event.position


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def feeding(
    log: JournalEventLog, consumer: Consumer, component: Component
) -> AsyncIterator[asyncio.Task[None]]:
    quick = Backoff(first=0.001, most=0.002)
    task = asyncio.create_task(feed(log, consumer, component, batch=3, backoff=quick))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def log(tmp_path: Path) -> JournalEventLog:
    return JournalEventLog(tmp_path, fsync=False)


async def test_every_event_once_in_order_from_the_checkpoint(log: JournalEventLog) -> None:
    log.append([event(n) for n in range(1, 11)])
    consumer, component = Recorder(start=4), Component("recorder")
    async with feeding(log, consumer, component):
        await until(lambda: consumer.position == 10)
        log.append([event(11)])  # and what comes later, woken by the append
        await until(lambda: consumer.position == 11)
    assert consumer.seen == list(range(5, 12))
    assert log.consumers() == {"recorder": 11}, "pruning knows where it is"
    assert component.state()[0] is State.OK and component.waiting() == 0


async def test_a_failure_part_way_retries_from_what_was_done(log: JournalEventLog) -> None:
    log.append([event(n) for n in range(1, 8)])
    consumer, component = Recorder(), Component("recorder", depends_on="a webhook")
    consumer.fail_on = {2: 3, 6: 1}
    async with feeding(log, consumer, component):
        await until(lambda: consumer.position == 7)
    assert consumer.seen == [1, 2, 3, 4, 5, 6, 7], "nothing skipped, nothing twice"
    assert component.state()[0] is State.OK, "recovered: the error is gone"


async def test_a_consumer_that_keeps_failing_shows_degraded_with_the_reason(
    log: JournalEventLog,
) -> None:
    log.append([event(1)])
    consumer, component = Recorder(), Component("recorder", depends_on="a webhook")
    consumer.fail_on = {1: 10_000}
    async with feeding(log, consumer, component):
        await until(lambda: component.error is not None)
        state, reason = component.state()
    assert state is State.DEGRADED and reason == "ConnectionError: refused 1"
    assert consumer.seen == [] and component.waiting() == 1


async def test_a_checkpoint_that_cannot_be_read_is_retried(log: JournalEventLog) -> None:
    log.append([event(1)])
    consumer, component = Recorder(), Component("recorder")
    consumer.load_failures = 3
    async with feeding(log, consumer, component):
        await until(lambda: consumer.position == 1)
    assert consumer.seen == [1]


async def test_a_coroutine_consumer_runs_on_the_loop(log: JournalEventLog) -> None:
    class Async(Recorder):
        async def handle(self, events: Sequence[LogEvent]) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            Recorder.handle(self, events)

    log.append([event(n) for n in range(1, 5)])
    consumer = Async()
    async with feeding(log, consumer, Component("async")):
        await until(lambda: consumer.position == 4)
    assert consumer.seen == [1, 2, 3, 4]


async def test_a_consumer_beyond_a_replaced_log_goes_on_from_its_head(
    log: JournalEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    log.append([event(1), event(2)])
    consumer = Recorder(start=40)  # the database kept a position of a log that is gone
    async with feeding(log, consumer, Component("recorder")):
        await until(lambda: consumer.position == 2)
        log.append([event(3)])
        await until(lambda: consumer.position == 3)
    assert consumer.seen == [3], "what comes after, not a skip of the next 38 events"
    assert "beyond the event log's head" in caplog.text


async def test_a_damaged_record_is_reported_not_spun_on(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path, segment_bytes=300, fsync=False)
    for n in range(1, 31):
        log.append([event(n)])
    log.close()
    first = sorted((tmp_path / "journal").glob("*.wal"))[0]
    data = bytearray(first.read_bytes())
    data[-3] ^= 0xFF  # the last record of the first segment: not the tail, not cut on reopen
    first.write_bytes(bytes(data))
    damaged = JournalEventLog(tmp_path, segment_bytes=300, fsync=False)
    consumer, component = Recorder(), Component("recorder")
    async with feeding(damaged, consumer, component):
        await until(lambda: component.state()[0] is State.FAILED)
    _, reason = component.state()
    assert reason is not None and "cannot be read after position" in reason
    assert consumer.position < 30, "it stopped at the damage, and says so"


def test_retrying_a_failure_of_its_own_for_ever_is_stuck_not_degraded() -> None:
    clock = [100.0]
    component = Component("recorder", clock=lambda: clock[0], backlog=lambda: 3)
    component.failing("ValueError: a bug in a consumer")
    assert component.state()[0] is State.DEGRADED, "for a while it may be a passing failure"
    clock[0] += 31
    state, reason = component.state()
    assert state is State.STUCK and reason is not None and "a bug" in reason
    outside = Component("webhook", clock=lambda: clock[0], backlog=lambda: 3, depends_on="x")
    outside.failing("HTTP 503")
    clock[0] += 31
    assert outside.state()[0] is State.DEGRADED, "an outside system's outage only degrades"

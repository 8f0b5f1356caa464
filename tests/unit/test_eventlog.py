"""The event log: order, durability across a reopen, readers from memory and disk, waiting,
checkpoints of consumers, and pruning that never drops what a consumer still needs."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from core.eventlog import ALERT, TICKET, FileCheckpoints, JournalEventLog, NewEvent


def event(n: int, kind: str = ALERT, institution: str = "inst-1") -> NewEvent:
    return NewEvent(kind, f"dev-{n}", institution, b'{"n": %d}' % n, raw_lsn=n * 10)


def drain(log: JournalEventLog, after: int = 0) -> list[tuple[int, str, int]]:
    cursor = log.cursor(after)
    found = []
    while batch := cursor.next_batch(7):
        found += [(e.position, e.subject, e.body()["n"]) for e in batch]
    cursor.close()
    return found


def test_events_come_back_in_order_with_what_travels_beside_them(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path)
    assert log.head == 0 and log.first == 1
    assert log.append([event(1), event(2, TICKET, "inst-2")]) == 2
    assert log.append([]) == 2
    first, second = log.cursor(0).next_batch(10)
    assert (first.position, first.kind, first.subject, first.institution, first.raw_lsn) == (
        1,
        ALERT,
        "dev-1",
        "inst-1",
        10,
    )
    assert (second.kind, second.institution, second.body()) == (TICKET, "inst-2", {"n": 2})


def test_a_reopened_log_reads_from_disk_and_goes_on_numbering(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path, segment_bytes=512)
    for n in range(1, 51):
        log.append([event(n)])
    log.close()
    again = JournalEventLog(tmp_path, segment_bytes=512)
    assert again.head == 50
    assert not again.cursor(0).from_memory(), "nothing cached after a restart: from disk"
    assert [n for _, _, n in drain(again)] == list(range(1, 51))
    assert [p for p, _, _ in drain(again, after=45)] == [46, 47, 48, 49, 50]
    assert again.append([event(51)]) == 51


def test_readers_near_the_head_read_from_memory(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path)
    log.append([event(n) for n in range(1, 6)])
    cursor = log.cursor(2)
    assert cursor.from_memory()
    assert [e.position for e in cursor.next_batch(2)] == [3, 4]
    assert [e.position for e in cursor.next_batch(10)] == [5]
    assert cursor.next_batch(10) == [] and cursor.position == 5


def test_concurrent_appends_keep_one_order_without_gaps(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path, fsync=False)

    def write(prefix: int) -> None:
        for n in range(200):
            log.append([event(prefix * 1000 + n)])

    writers = [threading.Thread(target=write, args=(p,)) for p in (1, 2, 3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    found = drain(log)
    assert [p for p, _, _ in found] == list(range(1, 601))
    for prefix in (1, 2, 3):  # each writer's events in its own order
        mine = [n for _, _, n in found if n // 1000 == prefix]
        assert mine == sorted(mine) and len(mine) == 200


async def test_waiting_on_the_event_loop_wakes_on_an_append_from_a_thread(
    tmp_path: Path,
) -> None:
    log = JournalEventLog(tmp_path)
    assert await log.wait_async(0, 0.01) is False, "nothing yet: the wait times out"
    threading.Timer(0.05, lambda: log.append([event(1)])).start()
    started = time.monotonic()
    assert await log.wait_async(0, 5.0) is True
    assert time.monotonic() - started < 2.0, "woken by the append, not by the timeout"
    assert await log.wait_async(0, 0.01) is True, "already there: at once"


def test_checkpoints_are_kept_in_files_and_replaced_whole(tmp_path: Path) -> None:
    checkpoints = FileCheckpoints(tmp_path)
    assert checkpoints.load("webhook:duty") is None
    checkpoints.save("webhook:duty", 7)
    checkpoints.save("webhook:duty", 9)
    assert FileCheckpoints(tmp_path).load("webhook:duty") == 9
    assert [p.name for p in tmp_path.iterdir()] == ["webhook_duty.position"]


def _aged(log: JournalEventLog, seconds: float) -> None:
    """Make every segment look older than it is (pruning goes by a segment's last write)."""
    past = time.time() - seconds
    for path in (log._journal.directory).glob("*.wal"):
        os.utime(path, (past, past))


def test_pruning_keeps_the_retention_and_what_any_consumer_still_needs(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path, retention_s=3600, segment_bytes=600)
    for n in range(1, 101):
        log.append([event(n)])
    assert log.prune(["stream-a", "ledger"]) == 1, "no consumer has said where it is yet"
    log.note("stream-a", 100)
    log.note("ledger", 40)
    assert log.prune(["stream-a", "ledger"]) == 1, "everything is younger than the retention"
    _aged(log, 7200)
    first = log.prune(["stream-a", "ledger"])
    assert 1 < first <= 41, "only what every consumer has handled goes"
    assert drain(log, first - 1)[0][0] == first
    assert [p for p, _, _ in drain(log, 39)][:2] == [40, 41], "the ledger's next events stay"
    log.note("ledger", 100)
    assert log.prune(["stream-a", "ledger"]) > 90, "the active segment always stays"
    assert log.head == 100 and log.append([event(101)]) == 101


def test_an_oversized_log_drops_handled_events_before_the_retention(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path, retention_s=86400, max_bytes=2000, segment_bytes=600)
    for n in range(1, 101):
        log.append([event(n)])
    log.note("only", 100)
    assert log.prune(["only"]) > 50
    assert log.size_bytes() <= 2000 + 600


@pytest.mark.parametrize("fsync", [True, False])
def test_a_failed_append_is_reported_and_the_same_events_go_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    log = JournalEventLog(tmp_path, fsync=fsync)
    log.append([event(1)])

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        log.append([event(2)])
    assert log.error is not None and "No space" in log.error
    assert log.head == 1 and log.cursor(1).next_batch(5) == []
    monkeypatch.undo()
    assert log.append([event(2)]) == 2 and log.error is None
    assert [n for _, _, n in drain(log)] == [1, 2]


async def test_many_waiters_are_all_woken(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path)
    waiters = [asyncio.create_task(log.wait_async(0, 5.0)) for _ in range(20)]
    await asyncio.sleep(0.01)
    await asyncio.to_thread(log.append, [event(1)])
    assert await asyncio.gather(*waiters) == [True] * 20


def test_over_the_hard_cap_only_the_essential_consumers_hold_events(tmp_path: Path) -> None:
    log = JournalEventLog(tmp_path, retention_s=0, max_bytes=2000, segment_bytes=500)
    for n in range(1, 201):
        log.append([event(n)])
    log.note("alerts-sql", 200)
    log.note("webhook:dead", 3)  # down for weeks
    assert log.prune(["alerts-sql", "webhook:dead"]) <= 4, "without a hard cap it holds on"
    first = log.prune(["alerts-sql", "webhook:dead"], essential=["alerts-sql"])
    assert first > 150, "the essential consumer has them all: the dead output's are dropped"
    cursor = log.cursor(3)  # the dead output comes back
    batch = cursor.next_batch(5)
    assert batch[0].position == first and cursor.gap == (4, first - 1), "and hears of the gap"

"""The journal (spools, event log): order, durability boundaries, rotation, recovery."""

from __future__ import annotations

import errno
import os
import threading
import zlib
from pathlib import Path

import pytest

import core.journal as journal_module
from core.journal import HEADER, MAX_RECORD, Journal, JournalFullError, segment_name


def _drain(spool: Journal, after: int = 0, batch: int = 1000) -> list[tuple[int, bytes]]:
    reader = spool.reader(after)
    records: list[tuple[int, bytes]] = []
    while chunk := reader.next_batch(batch):
        records.extend(chunk)
    reader.close()
    return records


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Journal(tmp_path, segment_bytes=4096)
    for i in range(200):
        spool.append([f"message {i}-{j}".encode() * 5 for j in range(3)])
    assert spool.committed_lsn == 600
    assert len(spool.segments()) > 5
    records = _drain(spool, batch=37)
    assert [lsn for lsn, _ in records] == list(range(1, 601))
    assert records[0][1] == b"message 0-0" * 5
    assert records[-1][1] == b"message 199-2" * 5


def test_reader_resumes_after_a_given_lsn(tmp_path: Path) -> None:
    spool = Journal(tmp_path, segment_bytes=4096)
    spool.append([b"x%d" % i for i in range(300)])
    assert [lsn for lsn, _ in _drain(spool, after=250)] == list(range(251, 301))


def test_checkpoint_deletes_only_segments_wholly_behind_it(tmp_path: Path) -> None:
    spool = Journal(tmp_path, segment_bytes=2048)
    for i in range(100):
        spool.append([b"r" * 100 + str(i).encode()])
    before = spool.segments()
    spool.set_checkpoint(60)
    after = spool.segments()
    assert len(after) < len(before)
    assert after[0] <= 61, "the segment holding LSN 61 must survive"
    assert [lsn for lsn, _ in _drain(spool, after=60)] == list(range(61, 101))


def test_reopen_keeps_lsn_and_checkpoint(tmp_path: Path) -> None:
    spool = Journal(tmp_path)
    spool.append([b"a", b"b", b"c"])
    spool.set_checkpoint(2)
    spool.close()
    again = Journal(tmp_path)
    assert (again.committed_lsn, again.checkpoint_lsn) == (3, 2)
    assert again.append([b"d"]) == 4
    assert [body for _, body in _drain(again, after=2)] == [b"c", b"d"]


def test_a_torn_tail_is_cut_on_recovery(tmp_path: Path) -> None:
    spool = Journal(tmp_path)
    spool.append([b"first", b"second"])
    spool.close()
    segment = next(tmp_path.glob("*.wal"))
    intact = segment.stat().st_size
    with segment.open("ab") as handle:  # a crash in the middle of the next write
        handle.write(HEADER.pack(100, 0, 3) + b"only part of it")
    again = Journal(tmp_path)
    assert again.committed_lsn == 2
    assert segment.stat().st_size == intact
    assert again.append([b"third"]) == 3
    assert [body for _, body in _drain(again)] == [b"first", b"second", b"third"]


def test_a_corrupt_record_ends_the_readable_log(tmp_path: Path) -> None:
    spool = Journal(tmp_path)
    spool.append([b"good", b"flipped"])
    spool.close()
    segment = next(tmp_path.glob("*.wal"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert Journal(tmp_path).committed_lsn == 1


def test_reader_sees_only_committed_records_while_a_writer_appends(tmp_path: Path) -> None:
    spool = Journal(tmp_path, segment_bytes=64 * 1024)
    total = 20_000
    seen: list[int] = []

    def write() -> None:
        for start in range(0, total, 50):
            spool.append([b"%08d" % i for i in range(start, start + 50)])

    writer = threading.Thread(target=write)
    writer.start()
    reader = spool.reader(0)
    while len(seen) < total:
        spool.wait_beyond(reader.last_lsn, timeout=5)
        for lsn, body in reader.next_batch(500):
            assert int(body) == lsn - 1
            seen.append(lsn)
    writer.join()
    reader.close()
    assert seen == list(range(1, total + 1))


def test_wait_beyond_times_out_without_new_records(tmp_path: Path) -> None:
    spool = Journal(tmp_path)
    spool.append([b"x"])
    assert spool.wait_beyond(0, timeout=0.01) is True
    assert spool.wait_beyond(1, timeout=0.01) is False


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls: list[int] = []

    def short_write(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data)[:7])  # a filling disk writes only part

    journal = Journal(tmp_path)
    monkeypatch.setattr(os, "write", short_write)
    assert journal.append([b"a" * 100, b"b" * 50]) == 2
    monkeypatch.undo()
    assert len(calls) > 10, "each short write was followed by another"
    journal.close()
    assert [body for _, body in _drain(Journal(tmp_path))] == [b"a" * 100, b"b" * 50]


@pytest.mark.parametrize("failing", ["write", "fdatasync"])
def test_a_failed_write_leaves_nothing_and_the_same_records_go_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    journal = Journal(tmp_path)
    journal.append([b"before"])
    size = journal.size_bytes()
    real = getattr(os, failing)
    code = errno.ENOSPC if failing == "write" else errno.EIO

    def fail(fd: int, *args: memoryview) -> object:
        if failing == "write":  # part of the data reaches the disk, then the disk is full
            real(fd, bytes(args[0])[:5])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError) as raised:
        journal.append([b"lost?", b"no"])
    assert raised.value.errno == code
    assert journal.error is not None and os.strerror(code) in journal.error
    assert journal.committed_lsn == 1, "nothing of the failed group counts as durable"
    assert journal.size_bytes() == size, "the partial write was cut off"
    monkeypatch.undo()
    assert journal.append([b"lost?", b"no"]) == 3
    assert journal.error is None
    journal.close()
    assert [body for _, body in _drain(Journal(tmp_path))] == [b"before", b"lost?", b"no"]


def test_a_full_journal_refuses_until_it_is_drained(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=1024, max_bytes=4096)
    taken = 0
    with pytest.raises(JournalFullError):
        while True:
            journal.append([b"r" * 200])
            taken += 1
    assert 10 <= taken <= 20
    assert journal.error is not None and "full" in journal.error
    with pytest.raises(JournalFullError):  # once full, not even a small record slips in
        journal.append([b"s"])
    journal.set_checkpoint(journal.committed_lsn)  # handed on: segments behind it go
    assert journal.append([b"r" * 200]) == taken + 1
    assert journal.error is None


def test_a_full_journal_takes_again_only_with_room_to_spare(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=1024, max_bytes=8192)
    with pytest.raises(JournalFullError):
        while True:
            journal.append([b"r" * 200])
    size = journal.size_bytes()
    assert size > 8192 - 250, "it filled up to the cap"
    (tmp_path / "spare").write_bytes(b"")  # nothing freed: still refused
    with pytest.raises(JournalFullError):
        journal.append([b"s"])
    journal.set_checkpoint(journal.segments()[1] - 1)  # the oldest segment (~1 KiB) handed on
    assert journal.size_bytes() <= size - 800
    assert journal.append([b"s"]) == journal.committed_lsn, "an eighth of the cap is free again"


def test_the_directory_is_synced_when_a_segment_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(journal_module, "fsync_directory", synced.append)
    journal = Journal(tmp_path, segment_bytes=512)
    assert synced == [tmp_path], "the first segment's entry"
    for _ in range(5):
        journal.append([b"z" * 300])
    assert len(synced) == 5, "each new segment (the first append fits the first one)"
    journal.set_checkpoint(2)
    assert len(synced) == 6, "the checkpoint's rename too"


def test_a_record_too_large_to_read_is_reported_and_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([b"small"])
    huge = b"h" * (MAX_RECORD + 10)
    segment = tmp_path / segment_name(1)
    with segment.open("ab") as handle:  # as an older writer without the limit would have
        handle.write(HEADER.pack(len(huge), zlib.crc32(huge), 2) + huge)
    journal.close()
    again = Journal(tmp_path)
    assert again.committed_lsn == 2
    again.append([b"after"])
    reader = again.reader(0)
    records = reader.next_batch(10) + reader.next_batch(10)
    assert [body for _, body in records] == [b"small", b"after"]
    assert reader.oversized == [(2, len(huge))]
    with pytest.raises(ValueError, match="over"):
        again.append([huge])


def test_appends_from_several_threads_lose_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=4096, fsync=False)

    def write(prefix: int) -> None:
        for n in range(300):
            journal.append([b"%d-%d" % (prefix, n)])

    writers = [threading.Thread(target=write, args=(p,)) for p in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    records = _drain(journal)
    assert [lsn for lsn, _ in records] == list(range(1, 1201))
    assert len({body for _, body in records}) == 1200


def test_a_segment_that_cannot_be_created_leaves_the_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, segment_bytes=256)
    journal.append([b"a" * 200])

    def refused(directory: Path) -> None:
        raise OSError(errno.EIO, "directory fsync failed")

    monkeypatch.setattr(journal_module, "fsync_directory", refused)
    with pytest.raises(OSError, match="directory fsync"):
        journal.append([b"b" * 200])  # needs a new segment
    assert journal.segments() == [1], "no half-made segment in the list"
    monkeypatch.undo()
    assert journal.append([b"b" * 200]) == 2
    journal.close()
    assert [body[:1] for _, body in _drain(Journal(tmp_path))] == [b"a", b"b"]

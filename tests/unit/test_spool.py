"""The write-ahead spool: order, durability boundaries, rotation, recovery."""

from __future__ import annotations

import threading
from pathlib import Path

from ingest.spool import HEADER, Spool


def _drain(spool: Spool, after: int = 0, batch: int = 1000) -> list[tuple[int, bytes]]:
    reader = spool.reader(after)
    records: list[tuple[int, bytes]] = []
    while chunk := reader.next_batch(batch):
        records.extend(chunk)
    reader.close()
    return records


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=4096)
    for i in range(200):
        spool.append([f"message {i}-{j}".encode() * 5 for j in range(3)])
    assert spool.committed_lsn == 600
    assert len(spool.segments()) > 5
    records = _drain(spool, batch=37)
    assert [lsn for lsn, _ in records] == list(range(1, 601))
    assert records[0][1] == b"message 0-0" * 5
    assert records[-1][1] == b"message 199-2" * 5


def test_reader_resumes_after_a_given_lsn(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=4096)
    spool.append([b"x%d" % i for i in range(300)])
    assert [lsn for lsn, _ in _drain(spool, after=250)] == list(range(251, 301))


def test_checkpoint_deletes_only_segments_wholly_behind_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=2048)
    for i in range(100):
        spool.append([b"r" * 100 + str(i).encode()])
    before = spool.segments()
    spool.set_checkpoint(60)
    after = spool.segments()
    assert len(after) < len(before)
    assert after[0] <= 61, "the segment holding LSN 61 must survive"
    assert [lsn for lsn, _ in _drain(spool, after=60)] == list(range(61, 101))


def test_reopen_keeps_lsn_and_checkpoint(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"a", b"b", b"c"])
    spool.set_checkpoint(2)
    spool.close()
    again = Spool(tmp_path)
    assert (again.committed_lsn, again.checkpoint_lsn) == (3, 2)
    assert again.append([b"d"]) == 4
    assert [body for _, body in _drain(again, after=2)] == [b"c", b"d"]


def test_a_torn_tail_is_cut_on_recovery(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"first", b"second"])
    spool.close()
    segment = next(tmp_path.glob("*.wal"))
    intact = segment.stat().st_size
    with segment.open("ab") as handle:  # a crash in the middle of the next write
        handle.write(HEADER.pack(100, 0, 3) + b"only part of it")
    again = Spool(tmp_path)
    assert again.committed_lsn == 2
    assert segment.stat().st_size == intact
    assert again.append([b"third"]) == 3
    assert [body for _, body in _drain(again)] == [b"first", b"second", b"third"]


def test_a_corrupt_record_ends_the_readable_log(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"good", b"flipped"])
    spool.close()
    segment = next(tmp_path.glob("*.wal"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert Spool(tmp_path).committed_lsn == 1


def test_reader_sees_only_committed_records_while_a_writer_appends(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=64 * 1024)
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
    spool = Spool(tmp_path)
    spool.append([b"x"])
    assert spool.wait_beyond(0, timeout=0.01) is True
    assert spool.wait_beyond(1, timeout=0.01) is False

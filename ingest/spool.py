"""The write-ahead spool: an append-only, segmented, checksummed log on local disk.

Every accepted message and every dead letter is appended here and made durable (fdatasync)
before the broker gets its PUBACK. A forwarder reads the spool in order and hands it to the
time-series store; what has been stored is marked by a checkpoint, and whole segments behind
the checkpoint are deleted. If the store is down, the spool simply grows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

log = logging.getLogger(__name__)

# length of body, CRC-32 of body, log sequence number (LSN) of the record
HEADER = struct.Struct("<IIQ")
SUFFIX = ".wal"
CHECKPOINT = "checkpoint"


def _segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}{SUFFIX}"


def _read_record(handle: BinaryIO) -> tuple[int, bytes] | None:
    """The next intact record, or None at the end or at a torn or corrupt tail."""
    header = handle.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, crc, lsn = HEADER.unpack(header)
    body = handle.read(length)
    if len(body) < length or zlib.crc32(body) != crc:
        return None
    return lsn, body


class SpoolSource(Protocol):
    """What a reader needs of a spool: where it is, its segments, its last durable record."""

    directory: Path

    @property
    def committed_lsn(self) -> int: ...

    def segments(self) -> list[int]: ...


def list_segments(directory: Path) -> list[int]:
    """First LSNs of the segments in a spool directory, oldest first."""
    return sorted(int(p.stem) for p in directory.glob(f"*{SUFFIX}"))


class Spool:
    """Durable, ordered storage of records between the receive edge and the store."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 << 20,
        fsync: bool = True,
        track_lag: bool = True,
    ):
        self.directory = directory
        self._track_lag = track_lag
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        directory.mkdir(parents=True, exist_ok=True)
        self._checkpoint = self._read_checkpoint()
        self._segments = list_segments(directory)
        self._committed = self._recover()
        if not self._segments:
            self._segments.append(self._committed + 1)
        self._fd = os.open(self._active_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size
        # (last LSN, monotonic time) of each group commit since start: how old the oldest
        # record not yet in the store is, without reading it back.
        self._commits: deque[tuple[int, float]] = deque()

    @property
    def _active_path(self) -> Path:
        return self.directory / _segment_name(self._segments[-1])

    def _read_checkpoint(self) -> int:
        try:
            return int((self.directory / CHECKPOINT).read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def _recover(self) -> int:
        """Find the last intact record; cut a torn tail left by a crash mid-write."""
        if not self._segments:
            return self._checkpoint
        path = self.directory / _segment_name(self._segments[-1])
        last = self._segments[-1] - 1
        with path.open("rb") as handle:
            good = 0
            while (record := _read_record(handle)) is not None:
                last, good = record[0], handle.tell()
        if good != path.stat().st_size:
            log.warning("spool %s: cutting a torn tail at byte %d", path.name, good)
            with path.open("r+b") as handle:
                handle.truncate(good)
        return max(last, self._checkpoint)

    @property
    def committed_lsn(self) -> int:
        """The LSN of the last durable record."""
        return self._committed

    @property
    def checkpoint_lsn(self) -> int:
        """The LSN of the last record the store has taken."""
        return self._checkpoint

    def append(self, bodies: Sequence[bytes]) -> int:
        """Write records in one go and make them durable; return the last LSN."""
        if not bodies:
            return self._committed
        lsn = self._committed
        chunks: list[bytes] = []
        for body in bodies:
            lsn += 1
            chunks.append(HEADER.pack(len(body), zlib.crc32(body), lsn))
            chunks.append(body)
        data = b"".join(chunks)
        if self._size and self._size + len(data) > self._segment_bytes:
            self._rotate(self._committed + 1)
        try:
            os.write(self._fd, data)
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError:
            # A part written (disk full) must not stay between two whole records.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        with self._changed:
            if self._track_lag:  # pruned by lag_seconds(): only for spools with a reader here
                self._commits.append((lsn, time.monotonic()))
            self._committed = lsn
            self._changed.notify_all()
        return lsn

    def _rotate(self, first_lsn: int) -> None:
        os.close(self._fd)
        with self._lock:
            self._segments.append(first_lsn)
        self._fd = os.open(self._active_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        if self._fsync:  # the new file's directory entry must survive a crash too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def wait_beyond(self, lsn: int, timeout: float) -> bool:
        """Block until a record after `lsn` is durable, or the timeout passes."""
        with self._changed:
            return self._changed.wait_for(lambda: self._committed > lsn, timeout)

    def set_checkpoint(self, lsn: int) -> None:
        """Mark everything up to `lsn` as stored and drop segments wholly behind it."""
        path = self.directory / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(lsn))
        if self._fsync:
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        tmp.replace(path)
        with self._lock:
            self._checkpoint = lsn
            while len(self._segments) > 1 and self._segments[1] - 1 <= lsn:
                first = self._segments.pop(0)
                (self.directory / _segment_name(first)).unlink(missing_ok=True)

    def lag_seconds(self) -> float:
        """Age of the oldest record committed in this run and not yet checkpointed."""
        with self._lock:
            while self._commits and self._commits[0][0] <= self._checkpoint:
                self._commits.popleft()
            oldest = self._commits[0][1] if self._commits else None
        return 0.0 if oldest is None else time.monotonic() - oldest

    def size_bytes(self) -> int:
        """Bytes on disk in all segments."""
        return sum(p.stat().st_size for p in self.directory.glob(f"*{SUFFIX}"))

    def segments(self) -> list[int]:
        """First LSNs of the segments on disk, oldest first."""
        with self._lock:
            return list(self._segments)

    def reader(self, after_lsn: int) -> SpoolReader:
        """A cursor over the records after `after_lsn`."""
        return SpoolReader(self, after_lsn)

    def close(self) -> None:
        """Close the active segment."""
        os.close(self._fd)


class SpoolReader:
    """Reads committed records in LSN order, remembering where it stopped.

    It reads segments in large chunks with `os.pread` and parses records from memory: one
    system call per chunk instead of several per record.
    """

    CHUNK = 4 << 20

    def __init__(self, spool: SpoolSource, after_lsn: int) -> None:
        self._spool = spool
        self.last_lsn = after_lsn
        self._fd: int | None = None
        self._segment = 0
        self._offset = 0

    def next_batch(self, max_records: int) -> list[tuple[int, bytes]]:
        """Up to `max_records` committed records after the last one returned."""
        batch: list[tuple[int, bytes]] = []
        end = self._spool.committed_lsn
        while len(batch) < max_records and self.last_lsn < end:
            if not self._open_for(self.last_lsn + 1):
                break
            if not self._read_chunk(batch, max_records, end) and not self._advance_segment():
                break
        return batch

    def _read_chunk(self, batch: list[tuple[int, bytes]], max_records: int, end: int) -> bool:
        """Append records from the current segment; False when it has no more for now."""
        assert self._fd is not None
        data = os.pread(self._fd, self.CHUNK, self._offset)
        view, pos, found = memoryview(data), 0, False
        while len(batch) < max_records and pos + HEADER.size <= len(data):
            length, crc, lsn = HEADER.unpack_from(view, pos)
            stop = pos + HEADER.size + length
            if lsn > end or stop > len(data):
                break
            if length > self.CHUNK - HEADER.size:
                raise ValueError(f"spool record {lsn} of {length} bytes exceeds the read chunk")
            body = bytes(view[pos + HEADER.size : stop])
            if zlib.crc32(body) != crc:
                break
            if lsn > self.last_lsn:
                batch.append((lsn, body))
                self.last_lsn = lsn
            pos, found = stop, True
        self._offset += pos
        return found

    def _open_for(self, lsn: int) -> bool:
        if self._fd is not None:
            return True
        segments = [f for f in self._spool.segments() if f <= lsn] or self._spool.segments()[:1]
        if not segments:
            return False
        self._segment = segments[-1]
        try:
            self._fd = os.open(self._spool.directory / _segment_name(self._segment), os.O_RDONLY)
        except FileNotFoundError:
            return False
        self._offset = 0
        return True

    def _advance_segment(self) -> bool:
        """Move to the next segment when this one is finished; False when there is none."""
        later = [f for f in self._spool.segments() if f > self._segment]
        if not later or later[0] > self.last_lsn + 1:
            return False
        self.close()
        return True

    def close(self) -> None:
        """Release the open segment."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

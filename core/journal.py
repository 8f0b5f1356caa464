"""The journal: an append-only, segmented, checksummed log of records on local disk.

Records are appended in groups and made durable (fdatasync) before `append` returns: the raw
spool (each MQTT message before its PUBACK), the points spool (what waits for the time-series
store) and the event log (every alert and ticket change) are journals. Readers go through the
records in order from any position; a checkpoint marks what has been handed on, and whole
segments behind it are deleted.

A write that fails (disk full, I/O error, a short write) is cut off again, so no torn record
stays between two whole ones, and the journal says so in `error` until an append succeeds:
the caller stops acknowledging and retries; nothing it was told is durable is lost.
"""

from __future__ import annotations

import contextlib
import errno
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
# The largest record a reader takes in one piece; a writer refuses larger ones, and a reader
# skips (and reports) any it finds, so one odd record never stops it.
MAX_RECORD = (4 << 20) - HEADER.size


class JournalFullError(OSError):
    """The journal has reached its size cap: nothing more is taken until it is drained.

    Once full, a journal takes nothing, however small, until an eighth of its cap is free
    again: the writer stops acknowledging crisply instead of letting a trickle of small groups
    through, and does not wake to every record handed on.
    """

    def __init__(self, directory: Path, cap: int) -> None:
        super().__init__(errno.ENOSPC, f"journal {directory} is full ({cap >> 20} MiB cap)")


def segment_name(first_lsn: int) -> str:
    """The file name of the segment whose first record has `first_lsn`."""
    return f"{first_lsn:020d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """First LSNs of the segments in a journal directory, oldest first."""
    return sorted(int(p.stem) for p in directory.glob(f"*{SUFFIX}"))


def fsync_directory(directory: Path) -> None:
    """Make a file's creation, rename or removal in `directory` survive a crash (fsync(2))."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte is written: a write may be short (a filling disk, a signal)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # POSIX allows 0 only for a zero-length request; never loop on it
            raise OSError(errno.EIO, "write(2) wrote nothing")
        view = view[written:]


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


class JournalSource(Protocol):
    """What a reader needs of a journal: where it is, its segments, its last durable record."""

    directory: Path

    @property
    def committed_lsn(self) -> int: ...

    def segments(self) -> list[int]: ...


class Journal:
    """Durable, ordered records; `append` is safe from several threads."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 << 20,
        max_bytes: int | None = None,
        fsync: bool = True,
        track_lag: bool = True,
    ):
        self.directory = directory
        self._track_lag = track_lag
        if max_bytes is not None:  # segments small enough that handing on frees the cap
            segment_bytes = min(segment_bytes, max(1 << 20, max_bytes // 8))
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        # Free room needed after the cap was hit before anything is taken again; never so much
        # that the active segment alone (which is never dropped) could keep the journal full.
        self._headroom = (
            0
            if max_bytes is None
            else max(0, min(max_bytes // 8, (max_bytes - segment_bytes) // 2))
        )
        self._full = False
        self._fsync = fsync
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._append_lock = threading.Lock()
        self.error: str | None = None  # why the last append failed; None once one succeeds
        directory.mkdir(parents=True, exist_ok=True)
        self._checkpoint = self._read_checkpoint()
        self._segments = list_segments(directory)
        self._committed = self._recover()
        if not self._segments:
            self._segments.append(self._committed + 1)
        self._fd = self._open_active()
        self._size = os.fstat(self._fd).st_size
        self._total = self.size_bytes()
        # (last LSN, monotonic time) of each group commit since start: how old the oldest
        # record not yet handed on is, without reading it back.
        self._commits: deque[tuple[int, float]] = deque()

    @property
    def _active_path(self) -> Path:
        return self.directory / segment_name(self._segments[-1])

    def _open_active(self) -> int:
        created = not self._active_path.exists()
        fd = os.open(self._active_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if created and self._fsync:  # the new file's directory entry must survive a crash too
            fsync_directory(self.directory)
        return fd

    def _read_checkpoint(self) -> int:
        try:
            return int((self.directory / CHECKPOINT).read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def _recover(self) -> int:
        """Find the last intact record; cut a torn tail left by a crash mid-write."""
        if not self._segments:
            return self._checkpoint
        path = self.directory / segment_name(self._segments[-1])
        last = self._segments[-1] - 1
        with path.open("rb") as handle:
            good = 0
            while (record := _read_record(handle)) is not None:
                last, good = record[0], handle.tell()
        if good != path.stat().st_size:
            log.warning("journal %s: cutting a torn tail at byte %d", path, good)
            with path.open("r+b") as handle:
                handle.truncate(good)
        return max(last, self._checkpoint)

    @property
    def committed_lsn(self) -> int:
        """The LSN of the last durable record."""
        return self._committed

    @property
    def checkpoint_lsn(self) -> int:
        """The LSN of the last record handed on."""
        return self._checkpoint

    def append(self, bodies: Sequence[bytes]) -> int:
        """Write records in one go and make them durable; return the last LSN.

        Raises OSError (JournalFullError at the size cap) with nothing written: the same
        records can be appended again.
        """
        if not bodies:
            return self._committed
        with self._append_lock:
            try:
                lsn = self._write(bodies)
            except OSError as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                raise
            self.error = None
            with self._changed:  # before the next writer starts from it
                if self._track_lag:  # pruned by lag_seconds(): only with a reader here
                    self._commits.append((lsn, time.monotonic()))
                self._committed = lsn
                self._changed.notify_all()
        return lsn

    def _write(self, bodies: Sequence[bytes]) -> int:
        lsn = self._committed
        chunks: list[bytes] = []
        for body in bodies:
            if len(body) > MAX_RECORD:
                raise ValueError(f"a record of {len(body)} bytes is over {MAX_RECORD}")
            lsn += 1
            chunks.append(HEADER.pack(len(body), zlib.crc32(body), lsn))
            chunks.append(body)
        data = b"".join(chunks)
        if self._max_bytes is not None:
            limit = self._max_bytes - (self._headroom if self._full else 0)
            if self._full or self._total + len(data) > limit:
                self._total = self.size_bytes()  # another process may have dropped segments
                self._full = self._total + len(data) > limit
                if self._full:
                    raise JournalFullError(self.directory, self._max_bytes)
        if self._size and self._size + len(data) > self._segment_bytes:
            self._rotate(self._committed + 1)
        try:
            write_all(self._fd, data)
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError:
            # A part written (disk full, I/O error) must not stay between two whole records.
            # After a failed fdatasync the kernel may have dropped the pages: write them again.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self._total += len(data)
        return lsn

    def _rotate(self, first_lsn: int) -> None:
        """Start a new segment; on failure the current one stays in use, untouched."""
        path = self.directory / segment_name(first_lsn)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if self._fsync:  # the new file's directory entry must survive a crash too
                fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        os.close(self._fd)
        self._fd, self._size = fd, 0
        with self._lock:
            self._segments.append(first_lsn)

    def wait_beyond(self, lsn: int, timeout: float) -> bool:
        """Block until a record after `lsn` is durable, or the timeout passes."""
        with self._changed:
            return self._changed.wait_for(lambda: self._committed > lsn, timeout)

    def set_checkpoint(self, lsn: int) -> None:
        """Mark everything up to `lsn` as handed on and drop segments wholly behind it."""
        path = self.directory / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(lsn))
        if self._fsync:
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        tmp.replace(path)
        if self._fsync:
            fsync_directory(self.directory)
        with self._lock:
            self._checkpoint = lsn
            self._drop_through(lsn)

    def _drop_through(self, lsn: int) -> None:
        """Delete segments whose records are all at or before `lsn` (never the active one)."""
        while len(self._segments) > 1 and self._segments[1] - 1 <= lsn:
            first = self._segments.pop(0)
            path = self.directory / segment_name(first)
            with contextlib.suppress(FileNotFoundError):
                self._total -= path.stat().st_size
                path.unlink()

    def lag_seconds(self) -> float:
        """Age of the oldest record committed in this run and not yet checkpointed."""
        with self._lock:
            while self._commits and self._commits[0][0] <= self._checkpoint:
                self._commits.popleft()
            oldest = self._commits[0][1] if self._commits else None
        return 0.0 if oldest is None else time.monotonic() - oldest

    def size_bytes(self) -> int:
        """Bytes on disk in all segments."""
        total = 0
        for path in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # dropped meanwhile
                total += path.stat().st_size
        return total

    def segments(self) -> list[int]:
        """First LSNs of the segments on disk, oldest first."""
        with self._lock:
            return list(self._segments)

    def reader(self, after_lsn: int) -> JournalReader:
        """A cursor over the records after `after_lsn`."""
        return JournalReader(self, after_lsn)

    def close(self) -> None:
        """Close the active segment."""
        os.close(self._fd)


class JournalReader:
    """Reads committed records in LSN order, remembering where it stopped.

    It reads segments in large chunks with `os.pread` and parses records from memory: one
    system call per chunk instead of several per record. A record too large for a chunk is
    checked and skipped; its (LSN, length) goes to `oversized` for the caller to report.
    """

    CHUNK = MAX_RECORD + HEADER.size

    def __init__(self, journal: JournalSource, after_lsn: int) -> None:
        self._journal = journal
        self.last_lsn = after_lsn
        self.oversized: list[tuple[int, int]] = []
        self._fd: int | None = None
        self._segment = 0
        self._offset = 0

    def next_batch(self, max_records: int) -> list[tuple[int, bytes]]:
        """Up to `max_records` committed records after the last one returned."""
        batch: list[tuple[int, bytes]] = []
        end = self._journal.committed_lsn
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
            if lsn > end:
                break
            if length > MAX_RECORD:
                if not self._skip_oversized(self._offset + pos, length, crc, lsn):
                    break
                pos, found = pos + HEADER.size + length, True
                continue
            stop = pos + HEADER.size + length
            if stop > len(data):
                break
            body = bytes(view[pos + HEADER.size : stop])
            if zlib.crc32(body) != crc:
                break
            if lsn > self.last_lsn:
                batch.append((lsn, body))
                self.last_lsn = lsn
            pos, found = stop, True
        self._offset += pos
        return found

    def _skip_oversized(self, offset: int, length: int, crc: int, lsn: int) -> bool:
        """Check a record too large to read at once, piece by piece; True if it is intact."""
        assert self._fd is not None
        start, running, left = offset + HEADER.size, 0, length
        while left:
            piece = os.pread(self._fd, min(left, self.CHUNK), start + length - left)
            if not piece:
                return False  # not all written yet (or torn): try again later
            running = zlib.crc32(piece, running)
            left -= len(piece)
        if running != crc:
            return False
        if lsn > self.last_lsn:
            log.error("journal record %d of %d bytes is too large to read: skipped", lsn, length)
            self.oversized.append((lsn, length))
            self.last_lsn = lsn
        return True

    def _open_for(self, lsn: int) -> bool:
        if self._fd is not None:
            return True
        segments = self._journal.segments()
        earlier = [f for f in segments if f <= lsn] or segments[:1]
        if not earlier:
            return False
        self._segment = earlier[-1]
        try:
            self._fd = os.open(self._journal.directory / segment_name(self._segment), os.O_RDONLY)
        except FileNotFoundError:
            return False
        self._offset = 0
        return True

    def _advance_segment(self) -> bool:
        """Move to the next segment when this one is finished; False when there is none."""
        later = [f for f in self._journal.segments() if f > self._segment]
        if not later or later[0] > self.last_lsn + 1:
            return False
        self.close()
        return True

    def close(self) -> None:
        """Release the open segment."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

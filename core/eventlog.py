"""The event log: every alert and ticket change, in one order, durable, read by consumers.

It is the only channel between the stages after the alert engine (shared/docs/architecture.md):
the engine and the ledger append; the live stream, the notifiers, the ledger, the SQL
projection of alerts and the publishers read, each from its own checkpoint, at least once and
idempotently by position. A position is a record's LSN in a local journal (core/journal.py):
it is the event id of the live stream, so a client that comes back resumes exactly.

This is the embedded form for one node. The `EventLog` protocol (core/ports.py) is what a
distributed log (NATS JetStream, Kafka) would implement for more than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from core.journal import Journal, JournalReader, fsync_directory, segment_name

log = logging.getLogger(__name__)

ALERT = "alert"
TICKET = "ticket"
CACHE_EVENTS = 8192  # the newest events, kept in memory for readers near the head
SEGMENT_BYTES = 16 << 20
HARD_CAP_FACTOR = 4


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: its kind, what it is about, whose it is, and its JSON body."""

    kind: str  # ALERT or TICKET
    subject: str  # an alert's subject (device, or zone:…), a ticket's id
    institution: str
    data: bytes  # the body as the stream sends it
    raw_lsn: int = 0  # for changes a device message caused: its place in the raw spool


@dataclass(frozen=True, slots=True)
class LogEvent:
    """An event in the log, at its position."""

    position: int
    kind: str
    subject: str
    institution: str
    data: bytes
    raw_lsn: int = 0

    def body(self) -> Any:
        """The decoded JSON body."""
        return orjson.loads(self.data)


def encode(event: NewEvent) -> bytes:
    """A journal record: a JSON header line, then the body."""
    head = orjson.dumps([event.kind, event.subject, event.institution, event.raw_lsn])
    return head + b"\n" + event.data


def decode(position: int, record: bytes) -> LogEvent:
    """The inverse of `encode`."""
    head, _, data = record.partition(b"\n")
    kind, subject, institution, raw_lsn = orjson.loads(head)
    return LogEvent(position, kind, subject, institution, data, raw_lsn)


class _Waiters:
    """Event-loop tasks waiting for appends, woken from whichever thread appends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def add(self, event: asyncio.Event) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiting.add(entry)
        return entry

    def remove(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiting.discard(entry)

    def wake(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for loop, event in waiting:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(event.set)


class JournalEventLog:
    """The event log in a journal under `directory`, with consumer checkpoints beside it."""

    def __init__(
        self,
        directory: Path,
        *,
        retention_s: float = 7 * 86400,
        max_bytes: int | None = None,
        segment_bytes: int = SEGMENT_BYTES,
        fsync: bool = True,
    ) -> None:
        self._journal = Journal(
            directory / "journal", segment_bytes=segment_bytes, fsync=fsync, track_lag=False
        )
        self._retention_s = retention_s
        self._max_bytes = max_bytes
        # Writers take turns for the whole append (journal and cache in one order); readers and
        # the event loop take only the short lock, never held across a disk write.
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cache: deque[LogEvent] = deque(maxlen=CACHE_EVENTS)
        self._waiters = _Waiters()
        self._consumers: dict[str, int] = {}  # name -> the last position it has handled
        self._pruned_through = 0  # events up to here are gone, even if the cache still has them
        self.checkpoints = FileCheckpoints(directory / "checkpoints", fsync=fsync)

    @property
    def head(self) -> int:
        """The position of the last durable event (0: none yet)."""
        return self._journal.committed_lsn

    @property
    def first(self) -> int:
        """The oldest position still readable; older ones were pruned."""
        segments = self._journal.segments()
        return segments[0] if segments else self.head + 1

    @property
    def error(self) -> str | None:
        """Why the last append failed, until one succeeds."""
        return self._journal.error

    def append(self, events: Sequence[NewEvent]) -> int:
        """Make the events durable, in order; the position of the last. Raises OSError."""
        if not events:
            return self.head
        records = [encode(e) for e in events]
        with self._write_lock:  # one writer at a time: the cache follows the journal's order
            last = self._journal.append(records)
            first = last - len(records) + 1
            logged = [
                LogEvent(first + n, e.kind, e.subject, e.institution, e.data, e.raw_lsn)
                for n, e in enumerate(events)
            ]
            with self._lock:
                self._cache.extend(logged)
        self._waiters.wake()
        return last

    def cursor(self, after: int) -> EventCursor:
        """A reader of the events after position `after`."""
        return EventCursor(self, after)

    def _cached_after(self, after: int, limit: int) -> list[LogEvent] | None:
        """Events after `after` from memory, or None when they are older than the cache."""
        with self._lock:
            if not self._cache or after < self._cache[0].position - 1:
                return None
            if after < self._pruned_through:  # pruned: the disk reader tells of the gap
                return None
            start = after - self._cache[0].position + 1
            return [self._cache[i] for i in range(start, min(len(self._cache), start + limit))]

    def wait_beyond(self, position: int, timeout: float) -> bool:
        """Block this thread until an event after `position` is durable, or the timeout."""
        return self._journal.wait_beyond(position, timeout)

    async def wait_async(self, position: int, within_s: float) -> bool:
        """Wait on the event loop until an event after `position` is durable, or the timeout."""
        if self.head > position:
            return True
        woken = asyncio.Event()
        entry = self._waiters.add(woken)
        try:
            if self.head > position:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), within_s)
            return self.head > position
        finally:
            self._waiters.remove(entry)

    def note(self, consumer: str, position: int) -> None:
        """A consumer has handled everything up to `position` (pruning keeps what it lacks)."""
        with self._lock:
            self._consumers[consumer] = position

    def forget(self, consumer: str) -> None:
        """A consumer is gone for good (removed from the configuration)."""
        with self._lock:
            self._consumers.pop(consumer, None)

    def consumers(self) -> dict[str, int]:
        """Each noted consumer's last handled position."""
        with self._lock:
            return dict(self._consumers)

    def prune(
        self, expected: Sequence[str], now: float | None = None, essential: Sequence[str] = ()
    ) -> int:
        """Delete segments every consumer in `expected` has handled and that are old enough
        (older than the retention, or the log is over its size); the new first position.

        Over HARD_CAP_FACTOR × its size, only the `essential` consumers hold events back: an
        output down for weeks (a webhook) must not fill the disk that alarms need.
        """
        positions = self.consumers()
        if any(name not in positions for name in expected):
            return self.first  # a consumer has not said where it is yet: keep everything
        handled = min((positions[name] for name in expected), default=self.head)
        hard = HARD_CAP_FACTOR * self._max_bytes if self._max_bytes is not None else None
        if essential and hard is not None and self._journal.size_bytes() > hard:
            behind = [n for n in expected if n not in essential and positions[n] < self.head]
            handled = min((positions[name] for name in essential), default=self.head)
            log.error(
                "event log over %d MiB: events not yet handled by %s are dropped",
                hard >> 20,
                ", ".join(behind) or "no one",
            )
        now = time.time() if now is None else now
        segments = self._journal.segments()
        size = self._journal.size_bytes()
        through = 0
        for first, following in itertools.pairwise(segments):
            if following - 1 > handled:
                break
            path = self._journal.directory / segment_name(first)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            over = self._max_bytes is not None and size > self._max_bytes
            if stat.st_mtime > now - self._retention_s and not over:
                break
            through, size = following - 1, size - stat.st_size
        if through:
            self._journal.set_checkpoint(through)
            with self._lock:
                self._pruned_through = through
            log.info("event log: dropped events through %d (kept from %d)", through, self.first)
        return self.first

    def size_bytes(self) -> int:
        """Bytes on disk."""
        return self._journal.size_bytes()

    def close(self) -> None:
        """Close the journal."""
        self._journal.close()


class EventCursor:
    """Reads the log in order from a position, from memory near the head, else from disk."""

    def __init__(self, log: JournalEventLog, after: int) -> None:
        self._log = log
        self.position = after
        self._reader: JournalReader | None = None
        self.gap: tuple[int, int] | None = None  # events skipped: (first, last), once pruned

    def next_batch(self, limit: int) -> list[LogEvent]:
        """Up to `limit` durable events after the last one returned (disk reads block)."""
        events = self._log._cached_after(self.position, limit)
        if events is None:
            events = self._from_disk(limit)
        elif self._reader is not None:
            self._reader.close()
            self._reader = None
        if events:
            if events[0].position != self.position + 1:  # pruned under the reader's feet
                self.gap = (self.position + 1, events[0].position - 1)
                log.error("event log: events %d-%d were pruned before they were read", *self.gap)
            self.position = events[-1].position
        return events

    def from_memory(self) -> bool:
        """True when the next batch comes from memory (no disk read: fine on the event loop)."""
        return self._log._cached_after(self.position, 1) is not None

    def _from_disk(self, limit: int) -> list[LogEvent]:
        if self._reader is None or self._reader.last_lsn != self.position:
            if self._reader is not None:
                self._reader.close()
            self._reader = JournalReader(self._log._journal, self.position)
        return [decode(lsn, record) for lsn, record in self._reader.next_batch(limit)]

    def close(self) -> None:
        """Release the open segment, if any."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class FileCheckpoints:
    """Consumer positions in small files, each replaced atomically."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self._directory = directory
        self._fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)

    def load(self, name: str) -> int | None:
        """The saved position of `name`, or None if it never saved one."""
        try:
            return int((self._directory / _file_name(name)).read_text().strip())
        except FileNotFoundError:
            return None

    def save(self, name: str, position: int) -> None:
        """Replace the saved position of `name`."""
        path = self._directory / _file_name(name)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            handle.write(str(position))
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        tmp.replace(path)
        if self._fsync:
            fsync_directory(self._directory)


def _file_name(consumer: str) -> str:
    """A consumer's name as a file name (`webhook:wecom-duty` → `webhook_wecom-duty`)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in consumer) + ".position"

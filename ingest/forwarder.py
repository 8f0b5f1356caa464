"""Moves spooled records to the time-series store and the dead-letter store, in order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import orjson

from core.errors import StoreError
from core.health import Component
from core.journal import Journal
from core.models import MAX_PAYLOAD_BYTES
from core.points import Point
from core.ports import TimeSeriesSink
from core.retry import Backoff
from ingest.deadletters import DeadLetterStore
from ingest.dedupe import digest
from ingest.metrics import IngestMetrics
from ingest.parser import Reason
from ingest.records import DeadLetter, SpoolRecord, decode

log = logging.getLogger(__name__)

BATCH_RECORDS = 5000
LINGER_S = 0.1
BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 30.0
UNREADABLE_TURNS = 20  # records beyond the reader that it cannot read, this many turns: failed


class Forwarder:
    """A task that writes batches (by size and time) and retries with back-off.

    The checkpoint advances only after a batch is stored, so a crash or an outage replays
    from the last stored record; the store keeps a point written twice once. The store's
    outage makes the service degraded, never unready: the spool holds the readings, and
    alarms do not wait for the store.
    """

    def __init__(
        self,
        spool: Journal,
        sink: TimeSeriesSink,
        dead_letters: DeadLetterStore,
        metrics: IngestMetrics,
        *,
        batch_records: int = BATCH_RECORDS,
        linger_s: float = LINGER_S,
        backoff_s: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S),
    ) -> None:
        self._spool = spool
        self._sink = sink
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._batch_records = batch_records
        self._linger_s = linger_s
        self._backoff_s = backoff_s
        self.store_healthy = True

    async def run(self, component: Component) -> None:
        """Forward for ever (until cancelled)."""
        component.backlog = lambda: self._spool.committed_lsn - self._spool.checkpoint_lsn
        reader = self._spool.reader(self._spool.checkpoint_lsn)
        unreadable = 0
        try:
            while True:
                if self._spool.committed_lsn - reader.last_lsn < self._batch_records:
                    await asyncio.sleep(self._linger_s)  # let a fuller batch gather
                batch = await asyncio.to_thread(reader.next_batch, self._batch_records)
                if batch:
                    await self._forward(batch, component)
                elif self._spool.committed_lsn > reader.last_lsn:  # a moment, or damage
                    unreadable += 1
                    if unreadable >= UNREADABLE_TURNS:
                        component.fault(f"the points spool cannot be read after {reader.last_lsn}")
                    continue
                unreadable = 0
                component.progress()
                self._update_lag()
        finally:
            reader.close()

    async def drain(self, within_s: float) -> None:
        """Wait until the store has everything spooled, while it takes it (at shutdown)."""
        deadline = time.monotonic() + within_s
        while True:
            behind = self._spool.checkpoint_lsn < self._spool.committed_lsn
            if not (behind and self.store_healthy) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.02)

    async def _forward(self, batch: list[tuple[int, bytes]], component: Component) -> None:
        """Store one batch, retrying until it is stored."""
        records, points, letters = await asyncio.to_thread(_decoded, batch)
        await self._write_with_retry(points, letters, records, component)
        await asyncio.to_thread(self._done, batch[-1][0], letters)
        self._metrics.stored.inc(len(points))

    def _done(self, lsn: int, letters: list[tuple[int, DeadLetter]]) -> None:
        if letters:
            self._dead_letters.add_many(letters)
        self._spool.set_checkpoint(lsn)

    async def _write_with_retry(
        self,
        points: list[Point],
        letters: list[tuple[int, DeadLetter]],
        records: list[SpoolRecord],
        component: Component,
    ) -> None:
        backoff = Backoff(*self._backoff_s)
        while True:
            component.busy()
            try:
                await asyncio.to_thread(self._write, points, letters, records)
                self.store_healthy = True
                return
            except StoreError as exc:
                self._metrics.store_errors.inc()
                self.store_healthy = False
                delay = backoff.next()
                component.failing(f"store {self._sink.name}: {exc}")
                log.warning("store %s: %s; retrying in %.1f s", self._sink.name, exc, delay)
            finally:
                component.idle()
            await asyncio.sleep(delay)

    def _write(
        self,
        points: list[Point],
        letters: list[tuple[int, DeadLetter]],
        records: list[SpoolRecord],
    ) -> None:
        """One attempt; a refused batch goes point by point. Raises StoreError to retry."""
        try:
            self._sink.write(points)
        except StoreError as exc:
            if exc.retryable:
                raise
            if not self._write_one_by_one(records, letters):
                raise StoreError(
                    "the store failed while points went one by one", retryable=True
                ) from exc

    def _write_one_by_one(
        self, records: Sequence[SpoolRecord], letters: list[tuple[int, DeadLetter]]
    ) -> bool:
        """Find the points the store refuses and keep them as dead letters.

        False when the store fails in a way worth retrying meanwhile (it went away): then
        nothing is dead-lettered and the whole batch is tried again later.
        """
        refused: list[tuple[int, DeadLetter]] = []
        for record, point in ((r, p) for r in records for p in r.points):
            try:
                self._sink.write([point])
            except StoreError as exc:
                if exc.retryable:
                    return False
                log.warning(
                    "dead letter (%s) device=%s: a %s point refused: %s",
                    Reason.STORE_REJECTED,
                    point.tags.get("device"),
                    point.measurement,
                    exc,
                )
                refused.append(_refused(record, point, exc))
        letters.extend(refused)
        self._metrics.dead_lettered.labels(Reason.STORE_REJECTED).inc(len(refused))
        return True

    def _update_lag(self) -> None:
        self._metrics.store_lag_records.set(self._spool.committed_lsn - self._spool.checkpoint_lsn)
        self._metrics.store_lag_seconds.set(self._spool.lag_seconds())


def _decoded(
    batch: list[tuple[int, bytes]],
) -> tuple[list[SpoolRecord], list[Point], list[tuple[int, DeadLetter]]]:
    """A batch's records, their points and their dead letters (in a worker thread: decoding
    thousands of records would hold the event loop for tens of milliseconds)."""
    records = [decode(body) for _, body in batch]
    points = [point for record in records for point in record.points]
    letters = [
        (lsn, record.dead_letter)
        for (lsn, _), record in zip(batch, records, strict=True)
        if record.dead_letter is not None
    ]
    return records, points, letters


def _refused(record: SpoolRecord, point: Point, exc: StoreError) -> tuple[int, DeadLetter]:
    """A point the store refused, kept as a dead letter (the message is not kept past the raw
    spool: the point stands for it)."""
    wire = orjson.dumps(point.to_wire())
    letter = DeadLetter(
        received_ms=record.received_ms,
        topic=f"store:{point.measurement}",
        reason=Reason.STORE_REJECTED,
        detail=str(exc)[:300],
        payload=wire[:MAX_PAYLOAD_BYTES],
        size=len(wire),
        institution=point.tags.get("institution"),
        device=point.tags.get("device"),
    )
    # A negative key keeps these apart from spool LSNs and is stable across replays.
    return -(digest(letter.payload) >> 2), letter

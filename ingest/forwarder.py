"""Moves spooled records to the time-series store and the dead-letter store, in order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import orjson

from core.errors import StoreError
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


class Forwarder:
    """A thread that writes batches (by size and time) and retries with back-off.

    The checkpoint advances only after a batch is stored, so a crash or an outage replays
    from the last stored record; the store keeps a point written twice once.
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
        self._backoff_min, self._backoff_max = backoff_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.store_healthy = True

    def start(self) -> None:
        """Start forwarding."""
        self._thread = threading.Thread(target=self._loop, name="spool-forward", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Forward what is spooled (while the store takes it, up to a timeout), then stop."""
        deadline = time.monotonic() + drain_timeout
        while (
            self.store_healthy
            and self._spool.checkpoint_lsn < self._spool.committed_lsn
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._backoff_max + 5)
            self._thread = None

    def _loop(self) -> None:
        reader = self._spool.reader(self._spool.checkpoint_lsn)
        try:
            while not self._stop.is_set():
                if not self._spool.wait_beyond(reader.last_lsn, timeout=0.5):
                    self._update_lag()
                    continue
                if self._spool.committed_lsn - reader.last_lsn < self._batch_records:
                    self._stop.wait(self._linger_s)  # let a fuller batch gather
                batch = reader.next_batch(self._batch_records)
                if batch and not self._forward(batch):
                    return
                self._update_lag()
        finally:
            reader.close()

    def _forward(self, batch: list[tuple[int, bytes]]) -> bool:
        """Store one batch; False when stopping before it could be stored."""
        points: list[Point] = []
        letters: list[tuple[int, DeadLetter]] = []
        records = [decode(body) for _, body in batch]
        for (lsn, _), record in zip(batch, records, strict=True):
            points.extend(record.points)
            if record.dead_letter is not None:
                letters.append((lsn, record.dead_letter))
        if not self._write_with_retry(points, letters, records):
            return False
        if letters:
            self._dead_letters.add_many(letters)
        self._spool.set_checkpoint(batch[-1][0])
        self._metrics.stored.inc(len(points))
        return True

    def _write_with_retry(
        self,
        points: list[Point],
        letters: list[tuple[int, DeadLetter]],
        records: list[SpoolRecord],
    ) -> bool:
        backoff = Backoff(first=self._backoff_min, most=self._backoff_max)
        while True:
            try:
                self._sink.write(points)
                self.store_healthy = True
                return True
            except StoreError as exc:
                self._metrics.store_errors.inc()
                if not exc.retryable:
                    if self._write_one_by_one(records, letters):
                        return True
                    exc = StoreError(
                        "the store failed while points went one by one", retryable=True
                    )
                self.store_healthy = False
                delay = backoff.next()
                log.warning("store %s: %s; retrying in %.1f s", self._sink.name, exc, delay)
            if self._stop.wait(delay):
                return False

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
                log.error("store refused a %s point of %s: %s", point.measurement, point.tags, exc)
                # The message itself is not kept past the raw spool: the point stands for it.
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
                refused.append((-(digest(letter.payload) >> 2), letter))
        letters.extend(refused)
        self._metrics.dead_lettered.labels(Reason.STORE_REJECTED).inc(len(refused))
        return True

    def _update_lag(self) -> None:
        self._metrics.store_lag_records.set(self._spool.committed_lsn - self._spool.checkpoint_lsn)
        self._metrics.store_lag_seconds.set(self._spool.lag_seconds())

"""Group commit: records are made durable together, and only then acknowledged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ingest.metrics import IngestMetrics
from ingest.spool import Spool

log = logging.getLogger(__name__)

Ack = Callable[[], None]


class GroupCommitter:
    """Collects records from the receive thread; a writer thread appends them in groups.

    While one fdatasync runs, the next group gathers, so the cost of durability is shared by
    every message that arrived meanwhile. A PUBACK is sent only after its record is on disk
    (MQTT 5.0 section 4.3.2: the receiver owns the message once it has sent PUBACK).
    """

    def __init__(self, spool: Spool, metrics: IngestMetrics) -> None:
        self._spool = spool
        self._metrics = metrics
        self._pending: list[tuple[bytes | None, Ack | None]] = []
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None

    def submit(self, body: bytes | None, ack: Ack | None) -> None:
        """Queue a record (None: nothing to write, e.g. a duplicate) and its acknowledgement."""
        with self._cond:
            self._pending.append((body, ack))
            self._cond.notify()

    def start(self) -> None:
        """Start the writer thread."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="spool-commit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit what is pending and stop."""
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or not self._running)
                batch, self._pending = self._pending, []
                if not batch and not self._running:
                    return
            self._commit(batch)

    def _commit(self, batch: list[tuple[bytes | None, Ack | None]]) -> None:
        bodies = [body for body, _ in batch if body is not None]
        try:
            self._spool.append(bodies)
        except OSError:
            # Without durability there is no acknowledgement: the broker keeps the messages
            # and delivers them again after the reconnect that follows.
            log.exception("spool write failed; %d messages stay unacknowledged", len(batch))
            return
        self._metrics.commit_batch.set(len(bodies))
        for _, ack in batch:
            if ack is not None:
                try:
                    ack()
                except Exception:  # a lost connection: the broker will redeliver
                    log.warning("acknowledgement failed", exc_info=True)

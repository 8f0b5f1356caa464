"""The ingest stage wired together.

    MQTT → edge process → raw spool (fdatasync, then PUBACK)
         → digester thread: parse, check, dedupe, listeners → points spool, dead letters
         → forwarder thread → time-series store

The edge process (ingest/edge.py) keeps the network loop away from this interpreter, so that
receiving, which is most of the work, has a core of its own. Listeners (presence, alerts) see
each message as soon as it is durable, without waiting for the store. Each is a task of the
supervisor (hazardwatch/supervisor.py); the digester, which parses, has a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.health import Component, TaskSpec
from core.journal import Journal, JournalReader
from core.ports import TimeSeriesSink
from core.registry.directory import DeviceDirectory
from core.retry import Backoff
from core.settings import DeadLetterSettings, IngestSettings, MqttEndpoint
from ingest.deadletters import DeadLetterStore
from ingest.edge import RECEIVE_MAXIMUM, decode_raw
from ingest.edge_process import EdgeProcess
from ingest.forwarder import Forwarder
from ingest.messages import RawMessage
from ingest.metrics import IngestMetrics
from ingest.parser import DEFAULT_PREFIX, Parser, Reason
from ingest.presence import Presence
from ingest.receiver import Outcome, Receiver
from ingest.records import DeadLetter, SpoolRecord, decode, encode_dead_letter

log = logging.getLogger(__name__)

CLIENT_ID = "hazardwatch-ingest"
# Redeliveries after a crash are the records at the spool's tail; this many are remembered.
PRIME_RECORDS = 100_000
DIGEST_BATCH = 2000
UNREADABLE_TURNS, UNREADABLE_WAIT_S = 20, 0.05  # as for the event log's readers (core/consumers)
RAW_KEY = "spool:raw"  # the dead-letter topic and key of raw records that could not be read
# A stamp this far after its receive time was moved on by Receiver._restamp; further is the
# device's own `ts`, which does not take part.
RESTAMP_REACH_MS = 1000


class IngestStage:
    """Owns the edge process, the digester and the forwarder; the supervisor runs their tasks."""

    def __init__(
        self,
        *,
        data_dir: Path,
        sink: TimeSeriesSink,
        directory: DeviceDirectory,
        endpoint: MqttEndpoint,
        mqtt5: bool = True,
        client_id: str = CLIENT_ID,
        prefix: str = DEFAULT_PREFIX,
        receive_maximum: int | None = RECEIVE_MAXIMUM,
        metrics: IngestMetrics | None = None,
        spool_max_bytes: int | None = None,
        checks: IngestSettings | None = None,
        dead_letter_budget: DeadLetterSettings | None = None,
    ) -> None:
        self.metrics = metrics or IngestMetrics()
        # The points spool and the raw spool share the cap: both are ingest's disk.
        self.spool = Journal(data_dir / "spool", max_bytes=spool_max_bytes)
        budget = dead_letter_budget or DeadLetterSettings()
        self.dead_letters = DeadLetterStore(
            data_dir / "deadletters.sqlite",
            keep=timedelta(days=budget.keep_days),
            max_bytes=int(budget.max_mib * 2**20),
        )
        self.sink = sink
        self.directory = directory
        self.presence = Presence(self.metrics)
        checks = checks or IngestSettings()
        parser = Parser(prefix, timedelta(days=checks.max_past_days))
        self.receiver = Receiver(parser, directory, self.metrics)
        self.receiver.add_listener(self.presence)
        self.forwarder = Forwarder(self.spool, sink, self.dead_letters, self.metrics)
        self.source = EdgeProcess(
            endpoint,
            spool_dir=data_dir / "raw",
            client_id=client_id,
            topics=parser.subscriptions,
            metrics=self.metrics,
            mqtt5=mqtt5,
            receive_maximum=receive_maximum,
            spool_max_bytes=spool_max_bytes,
        )
        self.digested_lsn = 0
        # Called after each digested batch, before it is written on: the alert stage makes
        # sure the batch's alert changes are durable, so a crash cannot skip them.
        self.barriers: list[Callable[[], None]] = []
        # Last receive time (epoch s) of each device in the spool's tail, found by `recover`.
        self.recovered_seen: dict[str, float] = {}
        self._recovered = False
        self._stop = threading.Event()
        self._digester = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digester")
        self._digesting: asyncio.Future[None] | None = None

    @property
    def stopping(self) -> threading.Event:
        """Set when the digester is to stop (barriers that wait on the disk give up then)."""
        return self._stop

    def recover(self) -> None:
        """Read the spool's tail: redeliveries to recognise, the last raw LSN digested."""
        if not self._recovered:
            self.digested_lsn = self._prime_dedupe()
            self._recovered = True

    def tasks(self) -> list[TaskSpec]:
        """The loops of ingestion, for the supervisor."""
        return [
            TaskSpec("edge", self.source.run),
            # CPU-bound parsing keeps a thread of its own; its state (duplicates seen, stamps
            # given) cannot be trusted after a crash: the service restarts from the spools.
            TaskSpec("digester", self.run_digester, fatal=True),
            # Its outage is the store's: readings wait in the spool, alarms do not wait at all.
            TaskSpec("forwarder", self.forwarder.run, depends_on="the time-series store"),
        ]

    async def run_digester(self, component: Component) -> None:
        """The digester's thread, until cancelled (then it finishes its batch first)."""
        self.recover()
        component.backlog = lambda: self.source.committed_lsn - self.digested_lsn
        loop = asyncio.get_running_loop()
        self._digesting = loop.run_in_executor(self._digester, self._digest_loop, component)
        try:
            await asyncio.shield(self._digesting)
        except asyncio.CancelledError:
            self._stop.set()
            await self._digesting
            raise

    async def shutdown(self) -> None:
        """Stop receiving, digest what is durable, forward what the store takes."""
        await self.source.stop()
        end = self.source.committed_lsn
        deadline = time.monotonic() + 30
        while self.digested_lsn < end and time.monotonic() < deadline:
            if self._digesting is None or self._digesting.done():
                break
            await asyncio.sleep(0.01)
        self._stop.set()
        if self._digesting is not None:
            with contextlib.suppress(Exception):  # a crash was reported when it happened
                await self._digesting
        await self.forwarder.drain(10.0)

    def close(self) -> None:
        """Release files and connections (after the tasks have ended)."""
        m = self.metrics
        log.info(
            "ingest stopped: received %d, accepted %d, duplicates %d, dead letters %d, "
            "points stored %d, %d records left in the spool for the next start",
            m.total("hazardwatch_messages_received_total"),
            m.total("hazardwatch_messages_accepted_total"),
            m.total("hazardwatch_messages_duplicate_total"),
            m.total("hazardwatch_messages_dead_lettered_total"),
            m.total("hazardwatch_points_stored_total"),
            self.pending,
        )
        self._digester.shutdown(wait=True)
        self.source.close()
        self.spool.close()
        self.sink.close()
        self.dead_letters.close()

    def _digest_loop(self, component: Component) -> None:
        """Turn durable raw records, in order, into points-spool records and dead letters."""
        reader = JournalReader(self.source, self.digested_lsn)
        next_size_at = 0.0
        unreadable = 0
        try:
            while not self._stop.is_set():
                if not self.source.wait_beyond(reader.last_lsn, timeout=0.25):
                    component.progress()  # nothing to do
                    continue
                batch: list[tuple[int, bytes | DeadLetter]] = []
                batch.extend(reader.next_batch(DIGEST_BATCH))
                if not batch and not reader.oversized:  # durable, but not read: damage?
                    unreadable += 1
                    if unreadable >= UNREADABLE_TURNS:
                        component.fault(f"the raw spool cannot be read after {reader.last_lsn}")
                    self._stop.wait(UNREADABLE_WAIT_S)
                    continue
                unreadable = 0
                component.progress()
                if reader.oversized:  # skipped by the reader: dead letters in their place
                    batch = sorted(self._oversized(reader.oversized) + batch, key=lambda r: r[0])
                    reader.oversized.clear()
                if batch:
                    try:
                        self._digest(batch, component)
                    except OSError:
                        if not self._stop.is_set():
                            raise
                        # Stopping while the disk refuses: the batch stays in the raw spool
                        # and is digested again at the next start.
                        log.warning("stopped with a batch not handed on; it waits in the spool")
                        return
                    self.digested_lsn = batch[-1][0]
                    self.source.release_through(self.digested_lsn)  # now in the points spool
                if time.monotonic() >= next_size_at:
                    self.metrics.spool_bytes.set(self.spool.size_bytes() + self.source.size_bytes())
                    next_size_at = time.monotonic() + 1.0
        finally:
            reader.close()

    def _oversized(self, found: list[tuple[int, int]]) -> list[tuple[int, bytes | DeadLetter]]:
        """Raw records too large to read (an older edge wrote them): dead letters, in place."""
        now_ms = time.time_ns() // 1_000_000
        letters: list[tuple[int, bytes | DeadLetter]] = []
        for raw_lsn, size in found:
            detail = f"raw spool record {raw_lsn} of {size} bytes is too large to read"
            log.warning("dead letter (%s): %s", Reason.RECORD_TOO_LARGE, detail)
            self.metrics.dead_lettered.labels(Reason.RECORD_TOO_LARGE).inc()
            letter = DeadLetter(now_ms, RAW_KEY, Reason.RECORD_TOO_LARGE, detail, b"", size)
            letters.append((raw_lsn, letter))
        return letters

    def _digest(
        self, batch: Sequence[tuple[int, bytes | DeadLetter]], component: Component
    ) -> None:
        bodies: list[bytes] = []
        letters: list[tuple[int, DeadLetter]] = []  # index in bodies, dead letter
        handle = self.receiver.handle
        for raw_lsn, body in batch:
            if isinstance(body, DeadLetter):
                outcome: Outcome | None = (encode_dead_letter(RAW_KEY, 0, body, raw_lsn), body)
            else:
                outcome = handle(_raw_message(body, raw_lsn), raw_lsn)
            if outcome is None:
                continue
            record, letter = outcome
            if letter is not None:
                letters.append((len(bodies), letter))
            bodies.append(record)
        for barrier in self.barriers:
            barrier()
        if bodies:
            self._persist(bodies, letters, component)

    def _persist(
        self, bodies: list[bytes], letters: list[tuple[int, DeadLetter]], component: Component
    ) -> None:
        """Append to the points spool, retrying while the disk refuses (full, read-only…).

        The messages are digested already (listeners told, duplicates remembered), so the
        same records are written again, not the batch digested again. Meanwhile the raw
        spool holds everything and the edge keeps receiving.
        """
        backoff = Backoff(first=0.5, most=30.0)
        while True:
            try:
                last = self.spool.append(bodies)
                break
            except OSError as exc:
                delay = backoff.next()
                component.fault(f"the points spool cannot be written: {exc}")
                log.error("cannot write the points spool: %s; retrying in %.1f s", exc, delay)
                if self._stop.wait(delay):
                    raise
        if letters:
            # Listed at once, keyed by their points-spool LSN as the forwarder would key them
            # (it stores them again, idempotently): visible even while the store is down.
            first = last - len(bodies) + 1
            self.dead_letters.add_many([(first + i, letter) for i, letter in letters])

    def _prime_dedupe(self) -> int:
        """Remember the spool's tail (redeliveries after a crash); return the last raw LSN."""
        start = max(0, self.spool.committed_lsn - PRIME_RECORDS)
        reader = self.spool.reader(start)
        primed, raw_lsn = 0, 0
        try:
            while batch := reader.next_batch(10_000):
                for _, body in batch:
                    record = decode(body)
                    self.receiver.dedupe.remember(record.key, record.digest, record.message_id)
                    if record.dead_letter is None:
                        seen = self.recovered_seen.get(record.key, 0.0)
                        self.recovered_seen[record.key] = max(seen, record.received_ms / 1000)
                        self._remember_stamps(record)
                    raw_lsn = max(raw_lsn, record.raw_lsn)
                    primed += 1
        finally:
            reader.close()
        if primed:
            log.info("recovered %d spooled records (%d not yet stored)", primed, self.pending)
        return raw_lsn

    def _remember_stamps(self, record: SpoolRecord) -> None:
        """Keep receive-time stamps unique across a restart.

        Messages without `ts` get their receive time, moved on by a millisecond when the
        device's previous message had it (Receiver._restamp). The raw records digested after a
        restart were received before it, so they must come after the stamps already given.
        """
        for point in record.points:
            if 0 <= point.time_ms - record.received_ms <= RESTAMP_REACH_MS:
                self.receiver.remember_stamp(record.key, point.time_ms)

    @property
    def pending(self) -> int:
        """Records in the spool that the store has not taken yet."""
        return self.spool.committed_lsn - self.spool.checkpoint_lsn


def _raw_message(body: bytes, raw_lsn: int) -> RawMessage:
    """A raw spool record as the receive path takes it (for every message: kept lean)."""
    received_ms, retained, dup, topic, payload, size = decode_raw(body)
    try:
        topic_text = topic.decode()
    except UnicodeDecodeError:
        topic_text = topic.decode("utf-8", "replace")
    received_at = datetime.fromtimestamp(received_ms / 1000, UTC)
    return RawMessage(
        topic_text, payload, received_at, retained, dup, raw_lsn, size if size >= 0 else None
    )

"""The ingest stage wired together.

    MQTT → edge process → raw spool (fdatasync, then PUBACK)
         → digester thread: parse, check, dedupe, listeners → points spool, dead letters
         → forwarder thread → time-series store

The edge process (ingest/edge.py) keeps the network loop away from this interpreter, so that
receiving, which is most of the work, has a core of its own. Listeners (presence, alerts) see
each message as soon as it is durable, without waiting for the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.ports import TimeSeriesSink
from core.registry.directory import DeviceDirectory
from core.settings import DeadLetterSettings, IngestSettings, MqttEndpoint
from ingest.deadletters import DeadLetterStore
from ingest.edge import RECEIVE_MAXIMUM, decode_raw
from ingest.edge_process import EdgeProcess
from ingest.forwarder import Forwarder
from ingest.messages import RawMessage
from ingest.metrics import IngestMetrics
from ingest.parser import DEFAULT_PREFIX, Parser
from ingest.presence import Presence
from ingest.receiver import Receiver
from ingest.records import DeadLetter, SpoolRecord, decode
from ingest.spool import Spool, SpoolReader

log = logging.getLogger(__name__)

CLIENT_ID = "hazardwatch-ingest"
# Redeliveries after a crash are the records at the spool's tail; this many are remembered.
PRIME_RECORDS = 100_000
DIGEST_BATCH = 2000
# A stamp this far after its receive time was moved on by Receiver._restamp; further is the
# device's own `ts`, which does not take part.
RESTAMP_REACH_MS = 1000


class IngestStage:
    """Owns the edge process and the threads of ingestion; start() and stop(), once each."""

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
        checks: IngestSettings | None = None,
        dead_letter_budget: DeadLetterSettings | None = None,
    ) -> None:
        self.metrics = metrics or IngestMetrics()
        self.spool = Spool(data_dir / "spool")
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
        )
        self.digested_lsn = 0
        # Called after each digested batch, before it is written on: the alert stage makes
        # sure the batch's alert changes are stored, so a crash cannot skip them.
        self.barriers: list[Callable[[], None]] = []
        # Last receive time (epoch s) of each device in the spool's tail, found by `recover`.
        self.recovered_seen: dict[str, float] = {}
        self._recovered = False
        self._stop = threading.Event()
        self._digester: threading.Thread | None = None

    def recover(self) -> None:
        """Read the spool's tail: redeliveries to recognise, the last raw LSN digested."""
        if not self._recovered:
            self.digested_lsn = self._prime_dedupe()
            self._recovered = True

    def start(self) -> None:
        """Recover, then start storing, digesting and receiving."""
        self.recover()
        self.forwarder.start()
        self.source.start()
        self._digester = threading.Thread(target=self._digest_loop, name="digester")
        self._digester.start()

    def stop(self) -> None:
        """Stop receiving, digest what is durable, forward what the store takes."""
        self.source.stop()
        end = self.source.committed_lsn
        deadline = time.monotonic() + 30
        while self.digested_lsn < end and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        if self._digester is not None:
            self._digester.join()
            self._digester = None
        self.forwarder.stop()
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
        self.spool.close()
        self.sink.close()
        self.dead_letters.close()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._digester is not None

    def _digest_loop(self) -> None:
        """Turn durable raw records, in order, into points-spool records and dead letters."""
        reader = SpoolReader(self.source, self.digested_lsn)
        next_size_at = 0.0
        try:
            while not self._stop.is_set():
                if not self.source.wait_beyond(reader.last_lsn, timeout=0.25):
                    continue
                batch = reader.next_batch(DIGEST_BATCH)
                if batch:
                    self._digest(batch)
                    self.digested_lsn = batch[-1][0]
                    self.source.release_through(self.digested_lsn)  # now in the points spool
                if time.monotonic() >= next_size_at:
                    self.metrics.spool_bytes.set(self.spool.size_bytes() + self.source.size_bytes())
                    next_size_at = time.monotonic() + 1.0
        except Exception:  # the service cannot go on without its digester: say so loudly
            log.critical("the digester stopped", exc_info=True)
            raise
        finally:
            reader.close()

    def _digest(self, batch: list[tuple[int, bytes]]) -> None:
        bodies: list[bytes] = []
        letters: list[tuple[int, DeadLetter]] = []  # index in bodies, dead letter
        handle = self.receiver.handle
        for raw_lsn, body in batch:
            received_ms, retained, dup, topic, payload = decode_raw(body)
            try:
                topic_text = topic.decode()
            except UnicodeDecodeError:
                topic_text = topic.decode("utf-8", "replace")
            raw = RawMessage(
                topic=topic_text,
                payload=payload,
                received_at=datetime.fromtimestamp(received_ms / 1000, UTC),
                retained=retained,
                dup=dup,
                lsn=raw_lsn,
            )
            outcome = handle(raw, raw_lsn)
            if outcome is None:
                continue
            record, letter = outcome
            if letter is not None:
                letters.append((len(bodies), letter))
            bodies.append(record)
        for barrier in self.barriers:
            barrier()
        if bodies:
            self._persist(bodies, letters)

    def _persist(self, bodies: list[bytes], letters: list[tuple[int, DeadLetter]]) -> None:
        """Append to the points spool, retrying while the disk refuses (full, read-only…).

        The messages are digested already (listeners told, duplicates remembered), so the
        same records are written again, not the batch digested again. Meanwhile the raw
        spool holds everything and the edge keeps receiving.
        """
        backoff = 0.5
        while True:
            try:
                last = self.spool.append(bodies)
                break
            except OSError as exc:
                log.error("cannot write the points spool: %s; retrying in %.1f s", exc, backoff)
                if self._stop.wait(backoff):
                    raise
                backoff = min(backoff * 2, 30.0)
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

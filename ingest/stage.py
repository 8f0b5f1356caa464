"""The ingest stage wired together: MQTT → parse → spool (ack) → store, with listeners."""

from __future__ import annotations

import logging
from pathlib import Path

from core.ports import TimeSeriesSink
from core.registry.directory import DeviceDirectory
from core.settings import MqttEndpoint
from ingest.committer import GroupCommitter
from ingest.deadletters import DeadLetterStore
from ingest.forwarder import Forwarder
from ingest.metrics import IngestMetrics
from ingest.mqtt_source import RECEIVE_MAXIMUM, MqttSource
from ingest.parser import DEFAULT_PREFIX, Parser
from ingest.presence import Presence
from ingest.receiver import Receiver
from ingest.records import decode
from ingest.spool import Spool

log = logging.getLogger(__name__)

CLIENT_ID = "hazardwatch-ingest"
# Redeliveries after a crash are the records at the spool's tail; this many are remembered.
PRIME_RECORDS = 100_000


class IngestStage:
    """Owns the threads of ingestion; start() and stop() in that order, once."""

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
    ) -> None:
        self.metrics = metrics or IngestMetrics()
        self.spool = Spool(data_dir / "spool")
        self.dead_letters = DeadLetterStore(data_dir / "deadletters.sqlite")
        self.sink = sink
        self.directory = directory
        self.presence = Presence()
        self.committer = GroupCommitter(self.spool, self.metrics)
        parser = Parser(prefix)
        self.receiver = Receiver(parser, directory, self.committer, self.metrics)
        self.receiver.add_listener(self.presence)
        self.forwarder = Forwarder(self.spool, sink, self.dead_letters, self.metrics)
        self.source = MqttSource(
            endpoint,
            client_id=client_id,
            topics=parser.subscriptions,
            handler=self.receiver.handle,
            mqtt5=mqtt5,
            receive_maximum=receive_maximum,
        )

    def start(self) -> None:
        """Recover, then start storing and receiving."""
        self._prime_dedupe()
        self.committer.start()
        self.forwarder.start()
        self.source.start()

    def stop(self) -> None:
        """Stop receiving, make everything received durable, forward what the store takes."""
        self.source.stop()
        self.committer.stop()
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

    def _prime_dedupe(self) -> None:
        """Remember the spool's tail so that redeliveries after a crash are recognised."""
        start = max(0, self.spool.committed_lsn - PRIME_RECORDS)
        reader = self.spool.reader(start)
        primed = 0
        try:
            while batch := reader.next_batch(10_000):
                for _, body in batch:
                    record = decode(body)
                    self.receiver.dedupe.remember(record.key, record.digest)
                    primed += 1
        finally:
            reader.close()
        if primed:
            log.info("recovered %d spooled records (%d not yet stored)", primed, self.pending)

    @property
    def pending(self) -> int:
        """Records in the spool that the store has not taken yet."""
        return self.spool.committed_lsn - self.spool.checkpoint_lsn

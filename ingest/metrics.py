"""Counters of the ingest stage, exported on /metrics in Prometheus text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class IngestMetrics:
    """One set per service; a registry of its own so that tests can run several services."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "hazardwatch_messages_received", "MQTT messages received", ["channel"], registry=r
        )
        self.accepted = Counter(
            "hazardwatch_messages_accepted", "valid device messages", ["channel"], registry=r
        )
        self.duplicates = Counter(
            "hazardwatch_messages_duplicate", "redelivered messages recognised", registry=r
        )
        self.dead_lettered = Counter(
            "hazardwatch_messages_dead_lettered", "messages rejected", ["reason"], registry=r
        )
        self.stored = Counter(
            "hazardwatch_points_stored", "points written to the time-series store", registry=r
        )
        self.store_errors = Counter(
            "hazardwatch_store_write_errors", "failed writes to the store", registry=r
        )
        self.store_lag_records = Gauge(
            "hazardwatch_store_lag_records", "spooled records not yet in the store", registry=r
        )
        self.store_lag_seconds = Gauge(
            "hazardwatch_store_lag_seconds", "age of the oldest record not in the store", registry=r
        )
        self.spool_bytes = Gauge("hazardwatch_spool_bytes", "size of the spool on disk", registry=r)
        self.seq_missing = Counter(
            "hazardwatch_seq_missing",
            "messages skipped in a device's seq (never delivered, or late)",
            registry=r,
        )
        self.seq_late = Counter(
            "hazardwatch_seq_late", "messages that arrived after a higher seq", registry=r
        )
        self._received: dict[str, Counter] = {}
        self._accepted: dict[str, Counter] = {}
        self.commit_batch = Gauge(
            "hazardwatch_spool_commit_batch", "records in the last group commit", registry=r
        )

    def count_received(self, channel: str) -> None:
        """One more message received on a channel (labelled children cached: hot path)."""
        child = self._received.get(channel)
        if child is None:
            child = self._received[channel] = self.received.labels(channel)
        child.inc()

    def count_accepted(self, channel: str) -> None:
        """One more valid message on a channel."""
        child = self._accepted.get(channel)
        if child is None:
            child = self._accepted[channel] = self.accepted.labels(channel)
        child.inc()

    def value(self, name: str, **labels: str) -> float:
        """A current sample value, for tests and the CLI summary."""
        sample = self.registry.get_sample_value(name, labels or None)
        return float(sample or 0.0)

    def total(self, name: str) -> float:
        """The sum of a labelled counter over all its labels."""
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name:
                    total += sample.value
        return total

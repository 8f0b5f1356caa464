"""The receive path: every MQTT message is parsed, checked, spooled and handed on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from core.clock import to_epoch_ms
from core.models import Channel, DeviceKind, DeviceMessage, Event, Telemetry
from core.registry.directory import DeviceDirectory
from ingest.dedupe import Deduplicator, digest, identify
from ingest.messages import Accepted, RawMessage, Rejected, Verdict
from ingest.metrics import IngestMetrics
from ingest.parser import Parser, Reason
from ingest.points import to_points
from ingest.records import DeadLetter, dead_letter_of, encode_dead_letter, encode_points

log = logging.getLogger(__name__)

Listener = Callable[[Accepted], None]
# What one message becomes in the spool: a record, and the dead letter if it was rejected.
Outcome = tuple[bytes, DeadLetter | None]
_CHANNELS = frozenset(c.value for c in Channel)


def guess_kind(message: DeviceMessage) -> DeviceKind | None:
    """What a message says about the kind of device that sent it."""
    if isinstance(message, Telemetry):
        if message.kind is not None:
            return message.kind
        present = [
            kind
            for kind, value in (
                (DeviceKind.SMOKE, message.smoke_db_m),
                (DeviceKind.GAS, message.gas_lel_pct),
                (DeviceKind.CO, message.co_ppm),
            )
            if value is not None
        ]
        if len(present) == 1:
            return present[0]
        return DeviceKind.MULTI if present else None
    if isinstance(message, Event) and message.source is not None:
        return DeviceKind(message.source.value)
    return None


class Receiver:
    """Turns each raw message, in arrival order, into a spool record; never raises."""

    def __init__(
        self,
        parser: Parser,
        directory: DeviceDirectory,
        metrics: IngestMetrics,
        dedupe: Deduplicator | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self._parser = parser
        self._directory = directory
        self._metrics = metrics
        self.dedupe = dedupe or Deduplicator()
        self._listeners = list(listeners)

    def remember_stamp(self, device: str, time_ms: int) -> None:
        """A receive time given before a restart: later stamps of the device come after it."""
        self.dedupe.remember_stamp(device, time_ms)

    def add_listener(self, listener: Listener) -> None:
        """Be told of every accepted message, in arrival order."""
        self._listeners.append(listener)

    def handle(self, raw: RawMessage, raw_lsn: int = 0) -> Outcome | None:
        """Process one message (`raw_lsn`: its place in the raw spool); None for a duplicate."""
        try:
            return self._handle(raw, raw_lsn)
        except Exception as exc:  # a bug must not stop ingestion: keep the message
            log.exception("unexpected error on topic %s", raw.topic)
            rejected = Rejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", raw)
            return self._reject(rejected, raw.topic, digest(raw.payload), raw_lsn)

    def _handle(self, raw: RawMessage, raw_lsn: int) -> Outcome | None:
        verdict = self._admit(self._parser.parse(raw))
        channel = raw.topic.rsplit("/", 1)[-1]
        channel = channel if channel in _CHANNELS else "other"
        self._metrics.count_received(channel)
        # Known by device id, never by topic string: one device, one window, however spelled.
        key = verdict.message.device if isinstance(verdict, Accepted) else verdict.device
        key = key or raw.topic
        fingerprint = digest(raw.payload)
        message_id = identify(verdict.message) if isinstance(verdict, Accepted) else None
        flagged = raw.dup or raw.retained
        if self.dedupe.is_duplicate(key, fingerprint, flagged=flagged, message=message_id):
            self._metrics.duplicates.inc()
            return None
        if isinstance(verdict, Rejected):
            return self._reject(verdict, key, fingerprint, raw_lsn)
        if not verdict.message.ts_from_device:
            verdict = Accepted(self._restamp(verdict.message), raw)
        info = self._directory.lookup(verdict.message.device)
        points = to_points(verdict.message, info.kind.value if info else None)
        received_ms = to_epoch_ms(raw.received_at)
        record = encode_points(key, fingerprint, received_ms, points, raw_lsn, message_id)
        self._metrics.count_accepted(channel)
        for listener in self._listeners:
            try:
                listener(verdict)
            except Exception:  # one failing listener must not starve the others
                log.exception("listener %r failed on %s", listener, raw.topic)
        return record, None

    def _restamp(self, message: DeviceMessage) -> DeviceMessage:
        """Give a message without `ts` a receive time unique for its device.

        Points are identified by measurement, tags and time in milliseconds (contract
        section 2): two messages of one device received in the same millisecond would
        otherwise overwrite each other.
        """
        stamp = self.dedupe.stamp(message.device, to_epoch_ms(message.ts))
        return message.model_copy(update={"ts": datetime.fromtimestamp(stamp / 1000, UTC)})

    def _admit(self, verdict: Verdict) -> Verdict:
        """Check the sender against the registry."""
        if isinstance(verdict, Rejected):
            return verdict
        message = verdict.message
        info = self._directory.admit(message.institution, message.device, guess_kind(message))
        if info is None:
            return Rejected(
                Reason.UNKNOWN_DEVICE,
                "device is not registered and auto-registration is off",
                verdict.raw,
                message.institution,
                message.device,
            )
        if info.institution != message.institution:
            return Rejected(
                Reason.INSTITUTION_MISMATCH,
                f"device is registered to institution {info.institution}",
                verdict.raw,
                message.institution,
                message.device,
            )
        return verdict

    def _reject(self, rejected: Rejected, key: str, fingerprint: int, raw_lsn: int) -> Outcome:
        letter = dead_letter_of(rejected)
        self._metrics.dead_lettered.labels(rejected.reason).inc()
        log.warning(
            "dead letter (%s) device=%s topic=%s: %s; payload %r",
            rejected.reason,
            rejected.device,
            rejected.raw.topic[:200],
            rejected.detail,
            rejected.raw.payload[:120],
        )
        return encode_dead_letter(key, fingerprint, letter, raw_lsn), letter

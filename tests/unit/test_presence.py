"""Live device state: last seen, online, latest reading, and gaps in `seq`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.models import Event, EventType, Status, Telemetry
from ingest.messages import Accepted, RawMessage
from ingest.metrics import IngestMetrics
from ingest.presence import Presence

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class Feed:
    def __init__(self) -> None:
        self.metrics = IngestMetrics()
        self.presence = Presence(self.metrics)
        self.n = 0

    def send(
        self, seq: int | None = None, *, event: EventType | None = None, **values: object
    ) -> None:
        self.n += 1
        at = T0 + timedelta(seconds=self.n)
        common: dict[str, Any] = {"institution": "inst-1", "device": "dev-1", "ts": at, "seq": seq}
        message: Telemetry | Event = (
            Event(**common, type=event) if event else Telemetry(**common, **values)
        )
        self.presence(Accepted(message, RawMessage("t", b"{}", at)))

    def state(self) -> tuple[int | None, int]:
        state = self.presence.get("dev-1")
        assert state is not None
        return state.last_seq, state.missing

    def counted(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(f"{name}_total")
        return value or 0.0


def test_consecutive_seqs_miss_nothing() -> None:
    feed = Feed()
    for seq in range(5, 10):
        feed.send(seq)
    assert feed.state() == (9, 0)


def test_a_gap_counts_the_messages_skipped_and_a_late_one_fills_it() -> None:
    feed = Feed()
    feed.send(10)
    feed.send(14)  # 11, 12, 13 missing
    assert feed.state() == (14, 3)
    assert feed.counted("hazardwatch_seq_missing") == 3
    feed.send(12)  # arrives late
    assert feed.state() == (14, 2)
    assert feed.counted("hazardwatch_seq_late") == 1


def test_a_device_that_counts_anew_is_no_gap() -> None:
    feed = Feed()
    feed.send(500)
    feed.send(1)  # rebooted and counts from 1 again
    feed.send(2)
    assert feed.state() == (2, 0)
    feed.send(7, event=EventType.POWER_ON)  # a power_on starts a new count whatever its seq
    feed.send(8)
    assert feed.state() == (8, 0)


def test_messages_without_seq_and_status_leave_the_count_alone() -> None:
    feed = Feed()
    feed.send(3)
    feed.send(None, smoke_db_m=0.01)
    feed.presence(
        Accepted(
            Status(institution="inst-1", device="dev-1", ts=T0, online=False),
            RawMessage("t", b"offline", T0),
        )
    )
    assert feed.state() == (3, 0)
    state = feed.presence.get("dev-1")
    assert state is not None and state.online is False

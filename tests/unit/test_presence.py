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


def test_the_latest_reading_is_kept_and_older_ones_or_heartbeats_do_not_replace_it() -> None:
    feed = Feed()
    feed.send(1, smoke_db_m=0.02, battery_pct=87, alarm=False)
    state = feed.presence.get("dev-1")
    assert state is not None
    assert state.reading == {"smoke_db_m": 0.02, "battery_pct": 87.0, "alarm": False}
    first_at = state.reading_at
    assert first_at == T0 + timedelta(seconds=1)
    feed.send(2)  # a heartbeat: no measurement
    older = Telemetry(institution="inst-1", device="dev-1", ts=T0, co_ppm=3.0)
    feed.presence(Accepted(older, RawMessage("t", b"{}", T0 + timedelta(seconds=9))))
    state = feed.presence.get("dev-1")
    assert state is not None
    assert state.reading_at == first_at and "co_ppm" not in state.reading
    assert state.last_seen == T0 + timedelta(seconds=9)
    feed.send(3, co_ppm=4.5, alarm=True)
    state = feed.presence.get("dev-1")
    assert state is not None
    assert state.reading == {"co_ppm": 4.5, "alarm": True}


def test_online_follows_status_and_any_other_message() -> None:
    feed = Feed()
    offline = Status(institution="inst-1", device="dev-1", ts=T0, online=False)
    feed.presence(Accepted(offline, RawMessage("t", b"offline", T0)))
    state = feed.presence.get("dev-1")
    assert state is not None and state.online is False and state.reading_at is None
    assert (state.reading, state.last_seq, state.missing) == ({}, None, 0)
    feed.send(None, smoke_db_m=0.01)
    state = feed.presence.get("dev-1")
    assert state is not None and state.online is True


def test_a_state_handed_out_is_a_copy_and_devices_are_apart() -> None:
    feed = Feed()
    feed.send(4, smoke_db_m=0.01)
    state = feed.presence.get("dev-1")
    assert state is not None
    state.reading["smoke_db_m"] = 99.0
    again = feed.presence.get("dev-1")
    assert again is not None and again.reading == {"smoke_db_m": 0.01}
    assert feed.presence.get("dev-2") is None
    other = Telemetry(institution="inst-1", device="dev-2", ts=T0, seq=9, gas_lel_pct=3.0)
    feed.presence(Accepted(other, RawMessage("t", b"{}", T0)))
    state = feed.presence.get("dev-2")
    assert state is not None and (state.last_seq, state.reading) == (9, {"gas_lel_pct": 3.0})
    assert len(feed.presence) == 2


def test_the_largest_seq_json_can_carry_is_kept() -> None:
    feed = Feed()
    feed.send(2**64 - 3)
    feed.send(2**64 - 1)
    assert feed.state() == (2**64 - 1, 1)

"""The receive path as the stage wires it: checks, duplicates and dead letters."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from core.db import make_engine, session_factory, upgrade
from core.points import Point
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from core.settings import IngestSettings, parse_mqtt_url
from ingest.messages import RawMessage
from ingest.parser import Reason
from ingest.stage import IngestStage

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
TELEMETRY = "hazardwatch/v1/inst-1/dev-1/telemetry"


class NullSink:
    """A store that takes everything; nothing here reaches it."""

    name = "null"

    def write(self, points: Sequence[Point]) -> None:
        pass

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[DeviceDirectory]:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    directory = DeviceDirectory(RegistryRepository(session_factory(engine)), auto_register=True)
    directory.load()
    yield directory
    engine.dispose()


def make_stage(
    tmp_path: Path, directory: DeviceDirectory, checks: IngestSettings | None = None
) -> IngestStage:
    return IngestStage(
        data_dir=tmp_path / "data",
        sink=NullSink(),
        directory=directory,
        endpoint=parse_mqtt_url("mqtt://127.0.0.1:1"),
        checks=checks,
    )


def test_the_stage_takes_the_age_limit_from_its_settings(
    tmp_path: Path, directory: DeviceDirectory
) -> None:
    stage = make_stage(tmp_path, directory, IngestSettings(max_past_days=1))
    two_days = orjson.dumps({"ts": "2026-11-21T08:00:00Z", "seq": 1, "smoke_db_m": 0.01})
    outcome = stage.receiver.handle(RawMessage(TELEMETRY, two_days, AT))
    assert outcome is not None and outcome[1] is not None
    assert outcome[1].reason == Reason.STALE_TIMESTAMP
    assert "2026-11-22T08:00:00+00:00, 1 day before the receive time" in outcome[1].detail
    recent = orjson.dumps({"ts": "2026-11-23T07:00:00Z", "seq": 2, "smoke_db_m": 0.01})
    outcome = stage.receiver.handle(RawMessage(TELEMETRY, recent, AT + timedelta(seconds=1)))
    assert outcome is not None and outcome[1] is None
    stage.spool.close()
    stage.dead_letters.close()


class Feed:
    """A stage's receive path, fed message by message."""

    def __init__(self, stage: IngestStage) -> None:
        self.stage = stage
        self.n = 0

    def send(
        self, payload: bytes, topic: str = TELEMETRY, *, dup: bool = False, retained: bool = False
    ) -> bool:
        """True when the message was taken (points or a dead letter), False for a duplicate."""
        self.n += 1
        at = AT + timedelta(seconds=self.n)
        raw = RawMessage(topic, payload, at, retained=retained, dup=dup, lsn=self.n)
        outcome = self.stage.receiver.handle(raw, self.n)
        if outcome is not None:
            self.stage.spool.append([outcome[0]])
        return outcome is not None

    def duplicates(self) -> float:
        return self.stage.metrics.total("hazardwatch_messages_duplicate_total")

    def close(self) -> None:
        self.stage.spool.close()
        self.stage.dead_letters.close()


@pytest.fixture
def feed(tmp_path: Path, directory: DeviceDirectory) -> Iterator[Feed]:
    fed = Feed(make_stage(tmp_path, directory))
    yield fed
    fed.close()


def test_a_message_re_sent_in_other_bytes_or_topic_spelling_is_one_message(feed: Feed) -> None:
    assert feed.send(b'{"seq": 5, "ts": "2026-11-23T07:59:00Z", "smoke_db_m": 0.01}')
    assert not feed.send(b'{"smoke_db_m":0.01,"ts":"2026-11-23T07:59:00Z","seq":5}')
    assert not feed.send(b'{ "seq" : 5, "ts" : 1795420740000, "smoke_db_m" : 0.01 }')
    doubled = "hazardwatch/v1/inst-1//dev-1/telemetry"
    assert not feed.send(b'{"seq": 5, "ts": "2026-11-23T07:59:00Z", "smoke_db_m": 0.01}', doubled)
    assert feed.duplicates() == 3
    assert feed.send(b'{"seq": 6, "ts": "2026-11-23T07:59:30Z", "smoke_db_m": 0.01}', doubled)
    assert not feed.send(b'{"seq": 6, "ts": "2026-11-23T07:59:30Z", "smoke_db_m": 0.01}')
    # Another device with the very same payload is another message.
    other = "hazardwatch/v1/inst-1/dev-2/telemetry"
    assert feed.send(b'{"seq": 6, "ts": "2026-11-23T07:59:30Z", "smoke_db_m": 0.01}', other)


def test_a_device_that_counts_anew_is_not_a_duplicate(feed: Feed) -> None:
    for seq in range(1, 6):
        assert feed.send(b'{"seq": %d, "smoke_db_m": 0.01}' % seq)
    event = "hazardwatch/v1/inst-1/dev-1/event"
    assert feed.send(b'{"seq": 0, "type": "power_on"}', event)
    assert feed.send(b'{"seq": 1, "smoke_db_m": 0.01}')  # seq 1 of the new count
    assert feed.send(b'{"seq": 2, "smoke_db_m": 0.01}')
    assert not feed.send(b'{"seq": 2, "smoke_db_m": 0.01}')  # a copy of the new 2
    for seq in range(3, 9):
        assert feed.send(b'{"seq": %d, "smoke_db_m": 0.01}' % seq)
    assert feed.send(b'{"seq": 1, "smoke_db_m": 0.01}')  # rebooted again, no power_on sent
    assert feed.duplicates() == 1


def test_without_seq_equal_bytes_are_a_duplicate_only_when_the_broker_says_so(
    feed: Feed,
) -> None:
    status = "hazardwatch/v1/inst-1/dev-1/status"
    assert feed.send(b"online", status, retained=True)
    assert feed.send(b"online", status)  # a new "online": same bytes, no flag
    assert not feed.send(b"online", status, retained=True)  # the retained one, replayed
    assert not feed.send(b"online", status, dup=True)  # redelivered after a reconnect
    assert feed.send(b'{"smoke_db_m": 0.01}')
    assert not feed.send(b'{"smoke_db_m": 0.01}', dup=True)
    assert feed.send(b'{"smoke_db_m":0.01}', dup=True)  # other bytes: nothing identifies it
    assert feed.duplicates() == 3


def test_a_restarted_stage_knows_the_identities_of_the_spools_tail(
    tmp_path: Path, directory: DeviceDirectory
) -> None:
    before = Feed(make_stage(tmp_path, directory))
    assert before.send(b'{"seq": 41, "ts": "2026-11-23T07:59:00Z", "smoke_db_m": 0.01}')
    assert before.send(b'{"seq": 0, "type": "power_on"}', "hazardwatch/v1/inst-1/dev-1/event")
    before.close()
    after = Feed(make_stage(tmp_path, directory))
    after.stage.recover()
    try:
        assert not after.send(b'{"ts":"2026-11-23T07:59:00Z","seq":41,"smoke_db_m":0.01}', dup=True)
        event = "hazardwatch/v1/inst-1/dev-1/event"
        assert not after.send(b'{"type":"power_on","seq":0}', event, dup=True)
        assert after.send(b'{"seq": 1, "smoke_db_m": 0.01}')
        assert after.duplicates() == 2
    finally:
        after.close()


def test_each_dead_letter_is_a_warning_naming_reason_device_and_topic(
    feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    secret_tail = b"TAIL-NOT-LOGGED"
    payload = b"{not json " + b"x" * 200 + secret_tail
    with caplog.at_level(logging.WARNING, logger="ingest.receiver"):
        assert feed.send(payload)
    [record] = [r for r in caplog.records if r.name == "ingest.receiver"]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "dead letter (bad_json)" in text
    assert "device=dev-1" in text and f"topic={TELEMETRY}" in text
    assert secret_tail not in text.encode() and "x" * 100 in text  # cut at 120 bytes


def test_an_id_with_a_trailing_newline_is_an_invalid_id_not_an_internal_error(
    tmp_path: Path, directory: DeviceDirectory
) -> None:
    # The parser took "dev-1\n" for an id; auto-registration then refused it (internal_error).
    stage = make_stage(tmp_path, directory)
    topic = "hazardwatch/v1/inst-1/dev-1\n/telemetry"
    outcome = stage.receiver.handle(RawMessage(topic, b'{"smoke_db_m": 0.01}', AT))
    assert outcome is not None and outcome[1] is not None
    assert outcome[1].reason == Reason.INVALID_ID
    assert directory.lookup("dev-1\n") is None
    stage.spool.close()
    stage.dead_letters.close()

"""What a restarted ingest stage learns from the spool's tail before it digests anything."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from core.clock import to_epoch_ms
from core.db import make_engine, session_factory, upgrade
from core.points import Point
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from core.settings import parse_mqtt_url
from ingest.messages import RawMessage
from ingest.records import decode
from ingest.stage import IngestStage


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


def make_stage(tmp_path: Path, directory: DeviceDirectory) -> IngestStage:
    return IngestStage(
        data_dir=tmp_path / "data",
        sink=NullSink(),
        directory=directory,
        endpoint=parse_mqtt_url("mqtt://127.0.0.1:1"),
    )


def reading(seq: int, at: datetime) -> RawMessage:
    body = orjson.dumps({"seq": seq, "kind": "smoke", "smoke_db_m": 0.01})
    return RawMessage("hazardwatch/v1/inst-1/dev-1/telemetry", body, at)


def point_time(outcome: tuple[bytes, object] | None) -> int:
    assert outcome is not None
    return decode(outcome[0]).points[0].time_ms


def test_receive_stamps_stay_unique_across_a_restart(
    tmp_path: Path, directory: DeviceDirectory
) -> None:
    """Raw records received before a crash but digested after it must not reuse a stamp.

    Two messages of one device received in the same millisecond get stamps t and t+1. If the
    crash comes between them, the second is digested by the next process; without the spool's
    tail it would be stamped t again and overwrite the first point in InfluxDB.
    """
    at = datetime(2026, 11, 23, 8, 0, 0, 123000, tzinfo=UTC)
    before = make_stage(tmp_path, directory)
    first, second = before.receiver.handle(reading(1, at)), before.receiver.handle(reading(2, at))
    assert point_time(second) == point_time(first) + 1 == to_epoch_ms(at) + 1
    assert first is not None and second is not None
    before.spool.append([first[0], second[0]])
    before.spool.close()
    before.dead_letters.close()

    after = make_stage(tmp_path, directory)
    after.recover()
    try:
        assert after.recovered_seen == {"dev-1": to_epoch_ms(at) / 1000}
        third = after.receiver.handle(reading(3, at))
        assert point_time(third) == to_epoch_ms(at) + 2
    finally:
        after.spool.close()
        after.dead_letters.close()


def test_a_device_timestamp_does_not_move_receive_stamps(
    tmp_path: Path, directory: DeviceDirectory
) -> None:
    """A device's own `ts` (here 5 minutes ahead, within the allowed skew) is no stamp."""
    at = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
    before = make_stage(tmp_path, directory)
    ahead = to_epoch_ms(at) + 300_000
    body = orjson.dumps({"seq": 1, "kind": "smoke", "smoke_db_m": 0.01, "ts": ahead})
    outcome = before.receiver.handle(RawMessage("hazardwatch/v1/inst-1/dev-1/telemetry", body, at))
    assert point_time(outcome) == ahead
    assert outcome is not None
    before.spool.append([outcome[0]])
    before.spool.close()
    before.dead_letters.close()

    after = make_stage(tmp_path, directory)
    after.recover()
    try:
        assert point_time(after.receiver.handle(reading(2, at))) == to_epoch_ms(at)
    finally:
        after.spool.close()
        after.dead_letters.close()

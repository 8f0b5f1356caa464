"""The receive path as the stage wires it: checks, duplicates and dead letters."""

from __future__ import annotations

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

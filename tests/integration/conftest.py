"""Real servers for integration tests: one of each per session, extra brokers per test.

Tests that stop, kill or restart a server should start their own (``mosquitto_factory``,
or a server class from ``tests.servers`` on ``tmp_path``) and leave the session ones alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from core.db import make_engine, session_factory, upgrade
from core.health import Health
from core.registry.directory import DeviceDirectory
from core.registry.models import RegistryFile
from core.registry.repository import RegistryRepository
from core.settings import parse_mqtt_url
from ingest.sinks.influx_v1 import InfluxV1Sink
from ingest.stage import IngestStage
from tests.integration.sites import site_factory  # noqa: F401 - a fixture for the tests
from tests.integration.webhooks import receiver  # noqa: F401 - a fixture for the tests
from tests.running import Running
from tests.servers import InfluxDB1, Mosquitto, MosquittoFactory, Postgres, require_binary


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto broker for the whole session, anonymous, with persistence."""
    require_binary("mosquitto")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """An InfluxDB 1.x server for the whole session; use ``influx_db`` for a database."""
    require_binary("influxd")
    server = InfluxDB1(tmp_path_factory.mktemp("influxdb")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A PostgreSQL server for the whole session with database and user ``hazardwatch``."""
    require_binary("initdb")
    require_binary("postgres")
    server = Postgres(tmp_path_factory.mktemp("postgres")).start()
    yield server
    server.cleanup()


@pytest.fixture
def influx_db(influxdb: InfluxDB1) -> Iterator[str]:
    """The name of a fresh database on the session InfluxDB, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    influxdb.create_database(name)
    yield name
    if influxdb.running:
        influxdb.drop_database(name)


@pytest.fixture
def mqtt_topic_prefix() -> str:
    """A topic prefix no other test uses, e.g. ``test-<uuid>/hazardwatch/v1``."""
    return f"test-{uuid.uuid4().hex}/hazardwatch/v1"


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Start extra, separately configured brokers; all are stopped after the test."""
    require_binary("mosquitto")
    brokers: list[Mosquitto] = []

    def start(
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        max_inflight: int | None = None,
        persistence: bool = True,
    ) -> Mosquitto:
        if users:
            require_binary("mosquitto_passwd")
        workdir = tmp_path / f"mosquitto-{len(brokers)}"
        broker = Mosquitto(
            workdir, users=users, acl=acl, max_inflight=max_inflight, persistence=persistence
        )
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.stop()


def make_directory(
    path: Path, *, auto_register: bool = True, registry: RegistryFile | None = None
) -> DeviceDirectory:
    """A device directory over a fresh SQLite registry at `path`, optionally filled."""
    url = f"sqlite:///{path}"
    upgrade(url)
    repository = RegistryRepository(session_factory(make_engine(url)))
    if registry is not None:
        repository.upsert_institutions(registry.institutions)
        repository.upsert_devices(registry.devices)
    directory = DeviceDirectory(repository, auto_register=auto_register)
    directory.load()
    return directory


class StageFactory(Protocol):
    """Starts an ingest stage against a broker and an InfluxDB database."""

    def __call__(
        self,
        broker: Mosquitto,
        *,
        influx: tuple[InfluxDB1, str] | None = None,
        auto_register: bool = True,
        registry: RegistryFile | None = None,
        spool_max_bytes: int | None = None,
    ) -> IngestStage: ...


# What the tasks of each running stage report, by id of the stage (tests read its states).
stage_health: dict[int, Health] = {}


@pytest.fixture
def stage_factory(
    tmp_path: Path, influxdb: InfluxDB1, influx_db: str, mqtt_topic_prefix: str
) -> Iterator[StageFactory]:
    """Ingest stages on the test's topic prefix, running until the end of the test."""
    stages: list[tuple[IngestStage, Running]] = []

    def make(
        broker: Mosquitto,
        *,
        influx: tuple[InfluxDB1, str] | None = None,
        auto_register: bool = True,
        registry: RegistryFile | None = None,
        spool_max_bytes: int | None = None,
    ) -> IngestStage:
        server, db = influx or (influxdb, influx_db)
        n = len(stages)
        stage = IngestStage(
            data_dir=tmp_path / f"data-{n}",
            sink=InfluxV1Sink(server.url, db),
            directory=make_directory(
                tmp_path / f"registry-{n}.sqlite", auto_register=auto_register, registry=registry
            ),
            endpoint=parse_mqtt_url(broker.url),
            client_id=f"hw-{uuid.uuid4().hex[:8]}",
            prefix=mqtt_topic_prefix,
            spool_max_bytes=spool_max_bytes,
        )
        running = Running(stage.tasks(), stage.shutdown).start()
        stage_health[id(stage)] = running.health
        stages.append((stage, running))
        assert stage.source.wait_connected(10), "ingest did not connect to Mosquitto"
        return stage

    yield make
    for stage, running in stages:
        running.stop()
        stage.close()
        stage_health.pop(id(stage), None)
        assert running.error is None, f"the stage's tasks failed: {running.error!r}"

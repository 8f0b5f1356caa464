"""The composition root: builds every stage from the settings and runs them in one process.

    MQTT → ingest (edge process, digester thread, forwarder) → time-series store
                      └→ alert engine → EVENT LOG → live stream (HTTP API)
                                          ├→ SQL projection of alerts
                                          ├→ ledger → ticket outbox → relay → EVENT LOG
                                          ├→ MQTT, InfluxDB alert and ticket points
                                          └→ webhooks

Every loop is a named task of one supervisor (hazardwatch/supervisor.py); this module only
builds and connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from alerts.metrics import AlertCollector
from alerts.outputs import InfluxAlertOutput, MqttOutput, WebhookOutput
from alerts.stage import AlertStage
from alerts.store import AlertStore
from api.app import create_app
from api.deps import ApiContext
from core.consumers import Consumer, feed
from core.db import WalCheckpointer, make_engine, session_factory, upgrade
from core.eventlog import JournalEventLog
from core.health import Component, Health, TaskSpec
from core.ports import TimeSeriesSink
from core.registry.directory import DeviceDirectory
from core.registry.institutions import InstitutionCache
from core.registry.repository import RegistryRepository
from core.settings import EMBEDDED_BROKER_PORT, MqttEndpoint, Settings
from core.users import UserStore
from hazardwatch.metrics import HealthCollector
from hazardwatch.supervisor import Supervisor
from ingest.embedded_broker import EmbeddedBroker
from ingest.messages import Accepted
from ingest.sinks.embedded import EmbeddedSink
from ingest.sinks.influx_v1 import InfluxV1Sink
from ingest.sinks.influx_v2 import InfluxV2Sink
from ingest.stage import CLIENT_ID, IngestStage
from tickets.attachments import AttachmentStore
from tickets.outputs import TicketPoints
from tickets.policy import load_policy
from tickets.stage import TicketStage

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
# Fewer young collections: fewer short-lived message objects promoted to the old generations,
# whose growth triggers full collections (bench.alert_latency: every 4 s before, rare after).
GC_THRESHOLDS = (20_000, 50, 50)
PRUNE_EVERY_S = 60.0
DRAIN_S = 3.0  # at shutdown, how long the consumers get to catch up with the log
Companion = Callable[["Service"], Coroutine[Any, Any, None]]


def build_sink(settings: Settings) -> TimeSeriesSink:
    """InfluxDB v1 or v2 as configured, or the embedded store."""
    token = settings.influx_token.get_secret_value() if settings.influx_token else None
    if settings.influx_url is None:
        return EmbeddedSink(settings.data_dir / "timeseries.sqlite")
    if settings.influx_api == "v1":
        return InfluxV1Sink(settings.influx_url, settings.influx_db, token)
    assert token is not None  # enforced by Settings
    return InfluxV2Sink(settings.influx_url, settings.influx_db, settings.influx_org, token)


def admin_token(settings: Settings) -> str:
    """The configured token, or one generated at first start and kept in the data dir."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.data_dir / "admin_token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    # Printed once, to the terminal only: logs must never carry secrets.
    print(f"generated admin token (kept in {path}): {token}", flush=True)
    return token


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Service:
    """Every part of a running hazardwatch, built by `build` and run by `run`."""

    settings: Settings
    client_id: str = CLIENT_ID
    embedded_broker_port: int = EMBEDDED_BROKER_PORT
    health: Health = field(default_factory=Health)
    broker: EmbeddedBroker | None = None
    parts: Parts | None = None

    async def start(self) -> Parts:
        """Start the embedded broker if needed, then build and recover every stage."""
        endpoint = self.settings.mqtt
        if endpoint is None:
            self.broker = EmbeddedBroker(port=self.embedded_broker_port)
            await self.broker.start()
            endpoint = self.broker.endpoint
        self.parts = await asyncio.to_thread(self._build, endpoint)
        return self.parts

    def _build(self, endpoint: MqttEndpoint) -> Parts:
        settings = self.settings
        # The digester keeps one thread busy; every other thread (consumers, HTTP) waits up
        # to this long for the GIL after each I/O call. With Python's 5 ms, an alarm's way to
        # the stream added up: p99 50 ms against 37 ms in bench.alert_latency.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        policy = load_policy(settings.tickets.policy)  # a bad file stops the start here
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.sql_url)
        parts = Parts.build(settings, endpoint, self.client_id, policy, self.broker is None)
        parts.recover()
        # What is loaded by now (code, registry, recovered state) lives as long as the process:
        # the collector need not walk it again. Full collections over everything took 70-100 ms
        # every 4 s at 10,000 msg/s, holding every thread; alarms waited that long.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        return parts

    async def drain(self) -> None:
        """Stop taking messages and make what was taken durable (tasks still run)."""
        parts = self.parts
        if parts is not None:
            await parts.ingest.shutdown()
            await asyncio.to_thread(parts.alerts.stop)
            await parts.caught_up(DRAIN_S)

    async def close(self) -> None:
        """Release everything (after every task has ended)."""
        if self.parts is not None:
            await asyncio.to_thread(self.parts.close)
        if self.broker is not None:
            await self.broker.stop()

    def api_context(self) -> ApiContext:
        """What the HTTP API gets."""
        parts = self.parts
        assert parts is not None, "start() first"
        return ApiContext(
            admin_token=admin_token(self.settings),
            registry=parts.repository,
            dead_letters=parts.ingest.dead_letters,
            presence=parts.ingest.presence,
            metrics=parts.ingest.metrics.registry,
            alerts=parts.alerts,
            users=parts.users,
            institutions_in_towns=parts.institutions.in_towns,
            tickets=parts.tickets,
            events=parts.events,
            health=self.health,
            readiness={
                "broker": parts.ingest.source.connected.is_set,
                "store": parts.ingest.sink.ping,
                "database": parts.repository.ping,
            },
        )


@dataclass
class Parts:
    """The stages and what connects them."""

    settings: Settings
    endpoint: MqttEndpoint
    repository: RegistryRepository
    users: UserStore
    institutions: InstitutionCache
    directory: DeviceDirectory
    events: JournalEventLog
    ingest: IngestStage
    alerts: AlertStage
    tickets: TicketStage
    checkpointer: WalCheckpointer
    outputs: list[Consumer]
    http: httpx.Client

    @classmethod
    def build(
        cls,
        settings: Settings,
        endpoint: MqttEndpoint,
        client_id: str,
        policy: Any,
        mqtt5: bool,
    ) -> Parts:
        """Every stage, from the settings (blocking: reads the registry)."""
        engine = make_engine(settings.sql_url)
        repository = RegistryRepository(session_factory(engine))
        institutions = InstitutionCache(repository)
        log.info("registry: %d institutions", institutions.load())
        directory = DeviceDirectory(repository, auto_register=settings.auto_register)
        log.info("registry: %d devices", directory.load())
        events = JournalEventLog(
            settings.data_dir / "events",
            retention_s=settings.events.retention_days * 86400,
            max_bytes=settings.events.max_mib << 20,
        )
        ingest = IngestStage(
            data_dir=settings.data_dir,
            sink=build_sink(settings),
            directory=directory,
            endpoint=endpoint,
            mqtt5=mqtt5,
            client_id=client_id,
            spool_max_bytes=settings.spool.max_mib << 20,
        )
        alerts = AlertStage(
            settings.alerts, directory, AlertStore(engine), events, settings.data_dir
        )
        attachments = AttachmentStore(
            settings.data_dir, int(settings.tickets.attachment_max_mb * 2**20)
        )
        tickets = TicketStage(policy, engine, institutions.get, events, attachments=attachments)
        http = httpx.Client()
        checkpoints = events.checkpoints
        outputs: list[Consumer] = [
            MqttOutput(endpoint, events, checkpoints, mqtt5=mqtt5),
            InfluxAlertOutput(build_sink(settings), events, checkpoints),
            TicketPoints(build_sink(settings), events, checkpoints),
        ]
        outputs += [
            WebhookOutput(hook, http, institutions.get, events, checkpoints)
            for hook in settings.alerts.webhooks
        ]
        parts = cls(
            settings,
            endpoint,
            repository,
            UserStore(engine),
            institutions,
            directory,
            events,
            ingest,
            alerts,
            tickets,
            WalCheckpointer(engine),
            outputs,
            http,
        )
        parts._wire()
        return parts

    def _wire(self) -> None:
        """Accepted messages to the alert engine; the engine's changes durable per batch."""
        alerts = self.alerts

        def observe(accepted: Accepted) -> None:
            alerts.observe(accepted.message, accepted.raw.received_at, accepted.raw.lsn)

        self.ingest.receiver.add_listener(observe)
        self.ingest.barriers.append(alerts.barrier)
        self.ingest.metrics.registry.register(AlertCollector(alerts.engine))

    def recover(self) -> None:
        """Read the spools' tails and rebuild the alert engine, before anything runs."""
        self.ingest.recover()
        self.alerts.recover(self.ingest.recovered_seen.items())

    def consumers(self) -> list[Consumer]:
        """Every reader of the event log that keeps a checkpoint."""
        return [self.alerts.projection, self.tickets.consumer, *self.outputs]

    def tasks(self, health: Health) -> list[TaskSpec]:
        """Every loop of the service."""
        health.add(self.alerts.journal_health)
        specs = [
            *self.ingest.tasks(),
            TaskSpec("alert-clock", self.alerts.run_clock),
            TaskSpec("ticket-relay", self.tickets.relay.run, depends_on="the database"),
            TaskSpec("ledger-clock", self.tickets.run_clock, depends_on="the database"),
            TaskSpec("registry-writer", self.directory.run_writer, depends_on="the database"),
            TaskSpec("institutions", self.institutions.run, depends_on="the database"),
            TaskSpec("event-log-prune", self._prune),
        ]
        if self.checkpointer.needed:
            specs.append(TaskSpec("wal-checkpoint", self.checkpointer.run))
        for consumer in self.consumers():
            specs.append(
                TaskSpec(
                    consumer.name, _feeder(self.events, consumer), depends_on=_outside(consumer)
                )
            )
        return specs

    async def caught_up(self, within_s: float) -> None:
        """Give the consumers a moment to handle what the last changes put on the log."""
        deadline = loop_time() + within_s
        head = self.events.head
        while loop_time() < deadline:
            if all(c.position >= head for c in self.consumers()):
                return
            await asyncio.sleep(0.05)

    async def _prune(self, component: Component) -> None:
        """Drop event-log segments every consumer has handled, past the retention."""
        names = [c.name for c in self.consumers()]
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            await asyncio.to_thread(self.events.prune, names)
            component.progress()

    def close(self) -> None:
        """Release files and connections (after every task has ended)."""
        self.ingest.close()
        self.http.close()
        self.events.close()
        with contextlib.suppress(Exception):  # writing them is retried at the next start
            self.directory.write_pending()


def _feeder(
    events: JournalEventLog, consumer: Consumer
) -> Callable[[Component], Coroutine[Any, Any, None]]:
    async def run(component: Component) -> None:
        await feed(events, consumer, component)

    return run


def _outside(consumer: Consumer) -> str:
    """The outside system a consumer waits on when it is slow."""
    name = consumer.name
    if name.startswith("webhook:"):
        return f"the webhook {name.removeprefix('webhook:')}"
    if name.startswith("influx"):
        return "the time-series store"
    if name == "mqtt":
        return "the MQTT broker"
    return "the database"


async def run(
    service: Service,
    stop: asyncio.Event | None = None,
    companion: Companion | None = None,
) -> None:
    """Run the service and its HTTP API until SIGINT/SIGTERM (or `stop` is set).

    `companion` runs beside the service once it has started (the demo's simulated fleet).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    parts = await service.start()
    settings = service.settings
    context = service.api_context()
    server = _Server(
        uvicorn.Config(
            create_app(context),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=5,  # a client that keeps a request open cannot hold us
        )
    )
    supervisor = Supervisor(service.health, parts.ingest.metrics.registry)
    for spec in parts.tasks(service.health):
        supervisor.add(spec.name, spec.body, fatal=spec.fatal, **spec.options())
    supervisor.add("http-api", lambda _c: _serve(server))
    if companion is not None:
        supervisor.add("companion", lambda _c: companion(service))
    parts.ingest.metrics.registry.register(HealthCollector(service.health))
    log.info("HTTP API on http://%s:%d", settings.api_host, settings.api_port)
    until = asyncio.Event()
    shutdown = asyncio.create_task(_shutdown(service, supervisor, context, server, stop, until))
    try:
        await supervisor.run(until)
    finally:
        stop.set()
        await shutdown
        await service.close()
        log.info("stopped")


async def _serve(server: _Server) -> None:
    await server.serve()
    await asyncio.Event().wait()  # served until asked to stop: then this task is cancelled


async def _shutdown(
    service: Service,
    supervisor: Supervisor,
    context: ApiContext,
    server: _Server,
    stop: asyncio.Event,
    until: asyncio.Event,
) -> None:
    """On `stop`: streams end, ingestion drains, then every task is cancelled."""
    await stop.wait()
    log.info("shutting down")
    supervisor.stopping = True
    context.closing.set()  # live streams end; their clients reconnect elsewhere
    server.should_exit = True
    try:
        await service.drain()
    finally:
        until.set()


def loop_time() -> float:
    """Monotonic seconds."""
    return time.monotonic()

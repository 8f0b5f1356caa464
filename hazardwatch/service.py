"""The composition root: builds every stage from the settings and runs them in one process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from alerts.metrics import AlertCollector
from alerts.publisher import AlertPublisher
from alerts.stage import AlertStage
from alerts.writer import utc
from api.app import create_app
from api.deps import ApiContext
from core.alerting import AlertChange, AlertState
from core.broadcast import Broadcaster
from core.db import WalCheckpointer, make_engine, session_factory, upgrade
from core.ports import TimeSeriesSink
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from core.settings import EMBEDDED_BROKER_PORT, Settings
from core.users import UserStore
from ingest.embedded_broker import EmbeddedBroker
from ingest.messages import Accepted
from ingest.sinks.embedded import EmbeddedSink
from ingest.sinks.influx_v1 import InfluxV1Sink
from ingest.sinks.influx_v2 import InfluxV2Sink
from ingest.stage import CLIENT_ID, IngestStage
from tickets.attachments import AttachmentStore
from tickets.models import TicketAction, TicketChange
from tickets.policy import load_policy
from tickets.stage import TicketStage
from tickets.store import TicketStore

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
# Fewer young collections: fewer short-lived message objects promoted to the old generations,
# whose growth triggers full collections (bench.alert_latency: every 4 s before, rare after).
GC_THRESHOLDS = (20_000, 50, 50)


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
    """Every part of a running hazardwatch; `start` and `stop` order them."""

    settings: Settings
    client_id: str = CLIENT_ID
    embedded_broker_port: int = EMBEDDED_BROKER_PORT
    broker: EmbeddedBroker | None = None
    ingest: IngestStage = field(init=False)
    alerts: AlertStage = field(init=False)
    tickets: TicketStage = field(init=False)
    repository: RegistryRepository = field(init=False)
    checkpointer: WalCheckpointer = field(init=False)
    users: UserStore = field(init=False)
    broadcaster: Broadcaster = field(default_factory=Broadcaster)

    def start(self) -> None:
        """Migrate the database, start the broker if embedded, then ingestion."""
        settings = self.settings
        # The digester keeps one thread busy; every other thread (alert writer, timer, HTTP)
        # waits up to this long for the GIL after each I/O call. With Python's 5 ms, an alarm's
        # database calls added up: p99 50 ms against 37 ms in bench.alert_latency.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        policy = load_policy(settings.tickets.policy)  # a bad file stops the start here
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.sql_url)
        engine = make_engine(settings.sql_url)
        self.users = UserStore(engine)
        self.checkpointer = WalCheckpointer(engine)
        self.checkpointer.start()
        self.repository = RegistryRepository(session_factory(engine))
        directory = DeviceDirectory(self.repository, auto_register=settings.auto_register)
        log.info("registry: %d devices", directory.load())
        directory.start()
        endpoint = settings.mqtt
        if endpoint is None:
            self.broker = EmbeddedBroker(port=self.embedded_broker_port)
            self.broker.start()
            endpoint = self.broker.endpoint
        self.ingest = IngestStage(
            data_dir=settings.data_dir,
            sink=build_sink(settings),
            directory=directory,
            endpoint=endpoint,
            mqtt5=self.broker is None,  # amqtt speaks MQTT 3.1.1 only
            client_id=self.client_id,
            checks=settings.ingest,
            dead_letter_budget=settings.deadletters,
        )
        self.alerts = AlertStage(
            settings.alerts,
            directory,
            engine,
            settings.data_dir,
            self.repository.institution,
            publisher=AlertPublisher(endpoint, mqtt5=self.broker is None),
            sink=build_sink(settings),
        )
        self.tickets = TicketStage(
            policy,
            engine,
            self.repository.institution,
            alert_state=self._alert_state,
            open_alerts=self.alerts.engine.open_alerts,
            attachments=AttachmentStore(
                settings.data_dir,
                int(settings.tickets.attachment_max_mb * 2**20),
                quota_bytes=int(settings.tickets.attachment_quota_mb * 2**20),
                usage=TicketStore(engine).evidence_files,
            ),
        )
        self._wire()
        self.ingest.recover()
        self.alerts.start(self.ingest.recovered_seen.items())
        self.tickets.start()
        self.ingest.start()
        # What is loaded by now (code, registry, recovered state) lives as long as the process:
        # the collector need not walk it again. Full collections over everything took 70-100 ms
        # every 4 s at 10,000 msg/s, holding every thread; alarms waited that long.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    def _wire(self) -> None:
        """Accepted messages to the alert engine; its changes to the stream and /metrics."""
        alerts = self.alerts

        def observe(accepted: Accepted) -> None:
            alerts.observe(accepted.message, accepted.raw.received_at, accepted.raw.lsn)

        def publish(change: AlertChange) -> None:
            self.broadcaster.publish("alert", change_event(change), change.alert.institution)

        def ticket_changed(change: TicketChange) -> None:
            body = ticket_event(change)
            self.broadcaster.publish("ticket", body, change.ticket.institution)
            if change.event.action in TICKET_NOTICES:
                alerts.notify_ticket(body)
            alert_id = change.event.alert_id
            if alert_id and change.event.action in (TicketAction.OPENED, TicketAction.ATTACHED):
                alerts.engine.link_ticket(alert_id, change.ticket.id)

        self.ingest.receiver.add_listener(observe)
        self.ingest.barriers.append(alerts.barrier)
        alerts.writer.add_listener(publish)
        alerts.writer.add_listener(self.tickets.submit)
        self.tickets.ledger.add_listener(ticket_changed)
        self.ingest.metrics.registry.register(AlertCollector(alerts))

    def _institutions_in_towns(self, towns: Iterable[str]) -> list[str]:
        wanted = set(towns)
        return [i.id for i in self.repository.institutions() if i.town in wanted]

    def _alert_state(self, alert_id: str) -> AlertState | None:
        alert = self.alerts.engine.get(alert_id)
        return alert.state if alert is not None else None

    def stop(self) -> None:
        """Stop in reverse order; what was received is durable when this returns."""
        self.ingest.stop()
        self.alerts.stop()
        self.tickets.stop()
        self.ingest.directory.stop()
        self.checkpointer.stop()
        if self.broker is not None:
            self.broker.stop()

    def api_context(self) -> ApiContext:
        """What the HTTP API gets."""
        return ApiContext(
            admin_token=admin_token(self.settings),
            registry=self.repository,
            dead_letters=self.ingest.dead_letters,
            presence=self.ingest.presence,
            metrics=self.ingest.metrics.registry,
            alerts=self.alerts,
            users=self.users,
            institutions_in_towns=self._institutions_in_towns,
            tickets=self.tickets,
            broadcaster=self.broadcaster,
            readiness={
                "broker": self.ingest.source.connected.is_set,
                "store": self.ingest.sink.ping,
                "database": self.repository.ping,
            },
        )


# Ticket changes people are told of through the webhooks (the alerts' outbox).
TICKET_NOTICES = frozenset(
    {
        TicketAction.OPENED,
        TicketAction.ESCALATED,
        TicketAction.RECTIFIED,
        TicketAction.VERIFIED,
        TicketAction.REJECTED,
        TicketAction.REOPENED,
    }
)


def ticket_event(change: TicketChange) -> dict[str, Any]:
    """The body of a `ticket` event on the stream."""
    event = change.event
    return {
        "action": event.action.value,
        "at": utc(event.at),
        "actor": event.actor,
        "note": event.note,
        "ticket": change.ticket.model_dump(mode="json"),
    }


def change_event(change: AlertChange) -> dict[str, Any]:
    """The body of an `alert` event on the stream."""
    return {
        "action": change.action.value,
        "at": utc(change.at),
        "actor": change.actor,
        "note": change.note,
        "alert": change.alert.model_dump(mode="json"),
    }


async def run(
    service: Service,
    stop: asyncio.Event | None = None,
    companion: Callable[[Service], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run the service and its HTTP API until SIGINT/SIGTERM (or `stop` is set).

    `companion` runs beside the service once it has started (the demo's simulated fleet).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await asyncio.to_thread(service.start)
    settings = service.settings
    config = uvicorn.Config(
        create_app(service.api_context()),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=5,  # a client that keeps a request open cannot hold us
    )
    server = _Server(config)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(server.serve(), name="http-api")
            if companion is not None:
                tasks.create_task(companion(service), name="companion")
            log.info("HTTP API on http://%s:%d", settings.api_host, settings.api_port)
            await stop.wait()
            service.broadcaster.close()  # live streams end; their clients reconnect elsewhere
            server.should_exit = True
    finally:
        log.info("shutting down")
        await asyncio.to_thread(service.stop)

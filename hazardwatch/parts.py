"""The stages of one service and what connects them, built from the settings.

The supervisor (hazardwatch/supervisor.py) runs the tasks they name; hazardwatch/service.py
starts and stops the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from alerts.metrics import AlertCollector
from alerts.notices import NoticeContext
from alerts.outputs import InfluxAlertOutput, MqttOutput, WebhookOutput
from alerts.phone import PhoneOutput, build_provider
from alerts.places import DevicePlaces
from alerts.robots import RobotOutput, robot_state_dir
from alerts.stage import AlertStage
from alerts.store import AlertStore
from core.accounts import Accounts
from core.consumers import Consumer, feed
from core.db import DatabaseWatch, Timeouts, WalCheckpointer, make_engine, session_factory
from core.eventlog import JournalEventLog
from core.health import Component, Health, TaskSpec
from core.loops import repeat
from core.ports import ReadingsSource, TimeSeriesSink
from core.registry.directory import DeviceDirectory
from core.registry.institutions import InstitutionCache
from core.registry.repository import RegistryRepository
from core.settings import MqttEndpoint, Settings
from core.users import UserStore
from ingest.messages import Accepted
from ingest.sinks.embedded import EmbeddedReadings, EmbeddedSink
from ingest.sinks.influx_v1 import InfluxV1Readings, InfluxV1Sink
from ingest.sinks.influx_v2 import InfluxV2Readings, InfluxV2Sink
from ingest.stage import IngestStage
from tickets.attachments import AttachmentStore
from tickets.outputs import TicketPoints
from tickets.policy import Policy
from tickets.stage import TicketStage
from tickets.store import TicketStore

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0
ORPHANS_EVERY_S = 3600.0
ORPHAN_AGE = timedelta(days=1)


def build_sink(settings: Settings) -> TimeSeriesSink:
    """InfluxDB v1 or v2 as configured, or the embedded store."""
    token = settings.influx_token.get_secret_value() if settings.influx_token else None
    if settings.influx_url is None:
        return EmbeddedSink(settings.data_dir / "timeseries.sqlite")
    if settings.influx_api == "v1":
        return InfluxV1Sink(settings.influx_url, settings.influx_db, token)
    assert token is not None  # enforced by Settings
    return InfluxV2Sink(settings.influx_url, settings.influx_db, settings.influx_org, token)


def build_readings(settings: Settings) -> ReadingsSource:
    """Where the API reads readings back: the same store the sink writes to."""
    token = settings.influx_token.get_secret_value() if settings.influx_token else None
    if settings.influx_url is None:
        return EmbeddedReadings(settings.data_dir / "timeseries.sqlite")
    if settings.influx_api == "v1":
        return InfluxV1Readings(settings.influx_url, settings.influx_db, token)
    assert token is not None  # enforced by Settings
    return InfluxV2Readings(settings.influx_url, settings.influx_db, settings.influx_org, token)


@dataclass
class Parts:
    """The stages and what connects them."""

    settings: Settings
    endpoint: MqttEndpoint
    database: DatabaseWatch
    repository: RegistryRepository
    users: UserStore
    accounts: Accounts
    institutions: InstitutionCache
    directory: DeviceDirectory
    events: JournalEventLog
    ingest: IngestStage
    alerts: AlertStage
    tickets: TicketStage
    checkpointer: WalCheckpointer
    outputs: list[Consumer]
    http: httpx.Client
    readings: ReadingsSource

    @classmethod
    def build(
        cls,
        settings: Settings,
        endpoint: MqttEndpoint,
        client_id: str,
        policy: Policy,
        mqtt5: bool,
    ) -> Parts:
        """Every stage, from the settings (blocking: reads the registry)."""
        db = settings.database
        engine = make_engine(
            settings.sql_url,
            Timeouts(db.connect_timeout_s, db.statement_timeout_s, db.lock_timeout_s),
        )
        watch = DatabaseWatch(engine, db.patience_s)
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
            checks=settings.ingest,
            dead_letter_budget=settings.deadletters,
        )
        alerts = AlertStage(
            settings.alerts, directory, AlertStore(engine), events, settings.data_dir
        )
        attachments = AttachmentStore(
            settings.data_dir,
            int(settings.tickets.attachment_max_mb * 2**20),
            quota_bytes=int(settings.tickets.attachment_quota_mb * 2**20),
            usage=TicketStore(engine).evidence_files,
        )
        tickets = TicketStage(policy, engine, institutions.get, events, attachments=attachments)
        http = httpx.Client()
        checkpoints = events.checkpoints
        outputs: list[Consumer] = [
            MqttOutput(endpoint, events, checkpoints, mqtt5=mqtt5),
            InfluxAlertOutput(build_sink(settings), events, checkpoints),
            TicketPoints(build_sink(settings), events, checkpoints),
        ]
        places = DevicePlaces(repository.devices, away=lambda: watch.away)
        places.load()  # at start, like the directory; reloaded off the delivery path
        notices = NoticeContext(
            settings.display.zone,
            settings.display.language,
            settings.console_url,
            places,
        )
        for hook in settings.alerts.webhooks:
            if hook.format == "generic":  # one delivery per change, its position as the id
                outputs.append(
                    WebhookOutput(hook, http, institutions.get, events, checkpoints, notices)
                )
                continue
            outputs.append(
                RobotOutput(
                    hook,
                    http,
                    institutions.get,
                    events,
                    checkpoints,
                    state_dir=robot_state_dir(settings.data_dir),
                    per_min=settings.alerts.robot_messages_per_min,
                    merge_window_s=settings.alerts.robot_merge_window_s,
                    context=notices,
                )
            )
        phone = build_provider(settings.alerts.phone)
        if phone is not None:
            outputs.append(
                PhoneOutput(
                    settings.alerts.phone,
                    phone,
                    institutions.get,
                    events,
                    checkpoints,
                    escalation_interval_s=settings.alerts.escalation_interval_s,
                    zone=settings.display.zone,
                )
            )
        users = UserStore(engine, away=lambda: watch.away)
        accounts = Accounts(engine, settings.auth, away=lambda: watch.away, users=users)
        parts = cls(
            settings,
            endpoint,
            watch,
            repository,
            users,
            accounts,
            institutions,
            directory,
            events,
            ingest,
            alerts,
            tickets,
            WalCheckpointer(engine),
            outputs,
            http,
            build_readings(settings),
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
        # A barrier waiting for a failing disk gives up when the digester is told to stop
        # (shutdown, or the supervisor cancelling it), instead of holding the stop for ever.
        alerts.stopping = self.ingest.stopping
        self.ingest.metrics.registry.register(AlertCollector(alerts.engine))

    def recover(self) -> None:
        """Read the spools' tails, rebuild the alert engine, settle the ticket relay's last
        batch: before anything runs."""
        self.ingest.recover()
        self.alerts.recover(self.ingest.recovered_seen.items())
        self.tickets.relay.recover()

    def consumers(self) -> list[Consumer]:
        """Every reader of the event log that keeps a checkpoint."""
        return [self.alerts.projection, self.tickets.consumer, *self.outputs]

    def tasks(self, health: Health) -> list[TaskSpec]:
        """Every loop of the service."""
        health.add(self.alerts.journal_health)
        specs = [
            *self.ingest.tasks(),
            TaskSpec("alert-clock", self.alerts.run_clock),
            TaskSpec("alert-journal", self.alerts.run_journal),
            TaskSpec("ticket-relay", self.tickets.relay.run, depends_on="the database"),
            TaskSpec("ledger-clock", self.tickets.run_clock, depends_on="the database"),
            TaskSpec("registry-writer", self.directory.run_writer, depends_on="the database"),
            TaskSpec("institutions", self.institutions.run, depends_on="the database"),
            TaskSpec("event-log-prune", self._prune),
            TaskSpec("dead-letter-prune", self._prune_dead_letters),
            TaskSpec("attachment-orphans", self._remove_orphans, depends_on="the database"),
            TaskSpec("audit-writer", self.accounts.audit.run, depends_on="the database"),
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
        # Without these two the SQL state would no longer follow the log; the outputs (MQTT,
        # InfluxDB, webhooks) lose their oldest undelivered events past the hard cap instead.
        essential = [self.alerts.projection.name, self.tickets.consumer.name]
        await asyncio.sleep(PRUNE_EVERY_S)
        await repeat(
            component,
            lambda: self.events.prune(names, essential=essential),
            every_s=PRUNE_EVERY_S,
        )

    async def _prune_dead_letters(self, component: Component) -> None:
        """Keep the dead letters within their budget ([deadletters])."""
        letters = self.ingest.dead_letters
        await repeat(component, lambda: letters.prune(datetime.now(UTC)), every_s=PRUNE_EVERY_S)

    async def _remove_orphans(self, component: Component) -> None:
        """Delete evidence files no audit trail refers to (an upload whose step failed) and
        leftovers of uploads cut off by a crash, once they are a day old."""
        attachments, store = self.tickets.attachments, self.tickets.store
        if attachments is None:
            await asyncio.Event().wait()
            return

        def sweep() -> None:
            removed = attachments.remove_orphans(store.referenced_files(), ORPHAN_AGE)
            if removed:
                log.warning("removed %d evidence files no ticket refers to", len(removed))

        await asyncio.sleep(PRUNE_EVERY_S)
        await repeat(component, sweep, every_s=ORPHANS_EVERY_S)

    def close(self) -> None:
        """Release files and connections (after every task has ended)."""
        with contextlib.suppress(Exception):  # the database away: logged by the task already
            self.accounts.audit.flush()
        self.ingest.close()
        self.http.close()
        self.readings.close()
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
    if name == "phone":
        return "the SMS and voice provider"
    return "the database"


def loop_time() -> float:
    """Monotonic seconds."""
    return time.monotonic()

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
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from api.app import create_app
from api.deps import ApiContext
from api.limits import BodyLimits
from api.streams import StreamSlots
from core.accounts import GENERATED_TOKEN, BootstrapMarker
from core.db import upgrade
from core.health import Health
from core.settings import EMBEDDED_BROKER_PORT, MqttEndpoint, Settings
from hazardwatch.metrics import HealthCollector
from hazardwatch.parts import Parts
from hazardwatch.ports import API_HINT, BROKER_HINT, bind, check_free
from hazardwatch.supervisor import Supervisor
from ingest.embedded_broker import EmbeddedBroker
from ingest.stage import CLIENT_ID
from tickets.policy import load_policy

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
# Fewer young collections: fewer short-lived message objects promoted to the old generations,
# whose growth triggers full collections (bench.alert_latency: every 4 s before, rare after).
GC_THRESHOLDS = (20_000, 50, 50)
WORKER_THREADS = 64
HTTP_GRACE_S = 6
BROKER_HOST = "127.0.0.1"  # the embedded broker serves this machine only
DRAIN_S = 3.0  # at shutdown, how long the consumers get to catch up with the log
Companion = Callable[["Service"], Coroutine[Any, Any, None]]


def admin_token(settings: Settings) -> str | None:
    """The configured token, or one generated at first start and kept in the data dir; None
    once revoked (`hazardwatch admin-token revoke`)."""
    marker = BootstrapMarker(settings.data_dir)
    if marker():
        if settings.admin_token is not None:
            log.warning(
                "HAZARDWATCH_ADMIN_TOKEN is set, but the bootstrap token was revoked (%s): "
                "it is refused; remove the setting",
                marker.path,
            )
        return None
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.data_dir / GENERATED_TOKEN
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
            # amqtt would log a traceback of its own for a taken port: say it in one line first.
            port = self.embedded_broker_port
            check_free(BROKER_HOST, port, what="embedded MQTT broker", hint=BROKER_HINT)
            self.broker = EmbeddedBroker(host=BROKER_HOST, port=port)
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
            database=parts.database,
            streams=StreamSlots(self.settings.stream.max_per_user, self.settings.stream.max_total),
            metrics_token=self.settings.api.metrics_bearer(),
            accounts=parts.accounts,
            bootstrap_revoked=BootstrapMarker(self.settings.data_dir),
            display=self.settings.display,
            readings=parts.readings,
            readiness={
                "broker": parts.ingest.source.connected.is_set,
                "store": parts.ingest.sink.ping,
                "database": lambda: not parts.database.away and parts.repository.ping(),
            },
        )


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
    # Every task has at most one blocking call at a time, and a hung database holds one thread
    # of each that uses it: the default six threads would be held, and the alert clock with
    # them. This many cannot all be held.
    loop.set_default_executor(ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="worker"))
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    settings = service.settings
    # Taken before anything starts, so that a taken port is one line, not a traceback later.
    api_socket = bind(settings.api_host, settings.api_port, what="HTTP API", hint=API_HINT)
    try:
        parts = await service.start()
    except BaseException:
        api_socket.close()
        raise
    context = service.api_context()
    api = settings.api
    server = _Server(
        uvicorn.Config(
            create_app(context, BodyLimits.of(settings.api, settings.tickets), docs=api.docs),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            lifespan="off",
            # The client's address (lock-out, audit log) and scheme (the cookie's Secure) as
            # a trusted reverse proxy gives them.
            proxy_headers=True,
            forwarded_allow_ips=settings.auth.trusted_proxies,
            timeout_graceful_shutdown=HTTP_GRACE_S - 1,  # a client cannot hold us longer
            # Both set: HTTPS only on this port. uvicorn builds the TLS context with Python's
            # defaults: TLS 1.2 at least, no SHA-1, RC4, 3DES or anonymous suites.
            ssl_certfile=api.tls_certfile,
            ssl_keyfile=api.tls_keyfile,
        )
    )
    supervisor = Supervisor(service.health, parts.ingest.metrics.registry)
    for spec in parts.tasks(service.health):
        supervisor.add(spec.name, spec.body, fatal=spec.fatal, **spec.options())
    served = asyncio.Event()
    supervisor.add("http-api", lambda _c: _serve(server, served, api_socket))
    if companion is not None:
        supervisor.add("companion", lambda _c: companion(service))
    parts.ingest.metrics.registry.register(HealthCollector(service.health))
    scheme = "https" if api.tls else "http"
    log.info("HTTP API on %s://%s:%d", scheme, settings.api_host, settings.api_port)
    until = asyncio.Event()
    shutdown = asyncio.create_task(
        _shutdown(service, supervisor, context, (server, served), stop, until)
    )
    try:
        await supervisor.run(until)
    finally:
        stop.set()
        await shutdown
        await service.close()
        log.info("stopped")


async def _serve(server: _Server, served: asyncio.Event, sock: socket.socket) -> None:
    """Serve until asked to stop (then the open streams end, within uvicorn's grace)."""
    try:
        await server.serve(sockets=[sock])
    finally:
        served.set()


async def _shutdown(
    service: Service,
    supervisor: Supervisor,
    context: ApiContext,
    http: tuple[_Server, asyncio.Event],
    stop: asyncio.Event,
    until: asyncio.Event,
) -> None:
    """On `stop`: streams end, ingestion drains, then every task is cancelled."""
    await stop.wait()
    log.info("shutting down")
    supervisor.stopping = True
    context.closing.set()  # live streams end; their clients reconnect elsewhere
    server, served = http
    server.should_exit = True
    try:
        await service.drain()
        with contextlib.suppress(TimeoutError):  # each stream's answer ends cleanly first
            await asyncio.wait_for(served.wait(), HTTP_GRACE_S)
    finally:
        until.set()

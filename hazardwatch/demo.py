"""`hazardwatch demo`: the service with embedded defaults, plus a simulated fleet."""

from __future__ import annotations

import argparse
import asyncio
import logging

from core.registry.models import RegistryFile
from core.settings import Settings
from hazardwatch.service import Service, admin_token, run
from ingest.parser import DEFAULT_PREFIX
from simulators.fleet import Fleet, SimOptions, Simulation
from simulators.mqtt import BrokerURL
from simulators.registry import build_fleet_spec, heartbeat_for, registry_document

log = logging.getLogger(__name__)


def _register_fleet(service: Service, args: argparse.Namespace) -> None:
    """Put the simulated institutions and devices into the registry, with their names."""
    heartbeat = heartbeat_for(args.devices, args.rate, args.malformed)
    spec = build_fleet_spec(args.institutions, args.devices, args.seed, heartbeat_s=heartbeat)
    registry = RegistryFile.model_validate(registry_document(spec))
    parts = service.parts
    assert parts is not None, "the service has started"
    parts.repository.upsert_institutions(registry.institutions)
    parts.repository.upsert_devices(registry.devices)
    parts.directory.load()
    parts.institutions.load()


def _banner(settings: Settings, broker_url: str, token: str | None) -> str:
    scheme = "https" if settings.api.tls else "http"
    api = f"{scheme}://{settings.api_host}:{settings.api_port}"
    docs = f"{api}/docs   " if settings.api.docs else ""
    shown = token or "(the bootstrap token is revoked: use a user's token)"
    return "\n".join(
        [
            "",
            "hazardwatch demo is running (Ctrl-C stops it)",
            f"  MQTT broker   {broker_url}   (topics hazardwatch/v1/#)",
            f"  HTTP API      {docs}health {api}/readyz   metrics {api}/metrics (token below)",
            f"  API token     Authorization: Bearer {shown}",
            f"  dead letters  curl -H 'Authorization: Bearer {shown}' {api}/api/v1/dead-letters",
            f"  data          {settings.data_dir.resolve()}",
            "",
        ]
    )


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Start everything; stop on SIGINT/SIGTERM or after --duration/--count."""
    service = Service(settings, embedded_broker_port=args.embedded_broker_port)
    stop = asyncio.Event()

    async def simulate(started: Service) -> None:
        await asyncio.to_thread(_register_fleet, started, args)
        broker_url = started.broker.url if started.broker else (settings.mqtt_url or "")
        print(_banner(settings, _hide_password(broker_url), admin_token(settings)), flush=True)
        options = SimOptions(
            broker=BrokerURL.parse(broker_url),
            institutions=args.institutions,
            devices=args.devices,
            rate=args.rate,
            seed=args.seed,
            prefix=DEFAULT_PREFIX,  # the topics the service subscribes to
            duration=args.duration,
            count=args.count,
            malformed=args.malformed,
            connections=args.connections,
            qos=args.qos,
        )
        fleet = Fleet.build(
            options.institutions,
            options.devices,
            seed=options.seed,
            rate=options.rate,
            prefix=options.prefix,
            malformed=options.malformed,
        )
        stats = await Simulation(options, fleet).run(stop)
        print(stats.summary(), flush=True)
        stop.set()

    await run(service, stop, companion=simulate)
    return 0


def _hide_password(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"

"""`hazardwatch demo`: the service with embedded defaults, a simulated district, and a story.

The fleet is the demo district (simulators/district.py), registered before it publishes; the
story (simulators/story.py) plays a fire, a gas leak, an offline detector, a low battery and a
fault within the first two minutes and again every few minutes; demo users get passwords.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import tzinfo
from importlib import resources
from pathlib import Path

import yaml

from core.registry.models import RegistryFile
from core.settings import Settings
from hazardwatch.demo_accounts import DemoLogin, ensure_demo_accounts
from hazardwatch.service import Service, admin_token, run
from ingest.parser import DEFAULT_PREFIX
from simulators.district import district_fleet_spec
from simulators.fleet import Fleet, RunStats, SimOptions, Simulation
from simulators.mqtt import BrokerURL
from simulators.registry import FleetSpec, heartbeat_for, registry_document
from simulators.story import DEFAULT_LEAD_S, LINEUP, SimulationStage, Story
from tickets.policy import load_policy

log = logging.getLogger(__name__)

DEMO_POLICY = "demo-policy.yaml"


def demo_fleet(args: argparse.Namespace) -> FleetSpec:
    """The district the demo's options describe."""
    heartbeat = heartbeat_for(args.devices, args.rate, args.malformed)
    return district_fleet_spec(args.institutions, args.devices, args.seed, heartbeat_s=heartbeat)


def demo_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with the demo's --host/--port and its ticket policy."""
    policy = write_demo_policy(settings, args.offline_ticket_after)
    changes: dict[str, object] = {"tickets": settings.tickets.model_copy(update={"policy": policy})}
    if args.host is not None:
        changes["api_host"] = args.host
    if args.port is not None:
        changes["api_port"] = args.port
    return settings.model_copy(update=changes)


def write_demo_policy(settings: Settings, offline_after_s: float) -> Path:
    """The configured ticket policy with a shorter wait before an offline detector's ticket
    (production waits 30 minutes: a demo would show none), in the data dir."""
    source = settings.tickets.policy
    text = source.read_text("utf-8") if source else _shipped_policy()
    data = yaml.safe_load(text) or {}
    rule = data.get("rules", {}).get("device_offline")
    if rule is not None:
        rule["delay"] = f"{offline_after_s:g}s"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / DEMO_POLICY
    header = f"# written by `hazardwatch demo` from {source or 'tickets/policy.yaml'}\n"
    path.write_text(header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    load_policy(path)  # a bad result stops the demo here, with the policy's own message
    return path


def _shipped_policy() -> str:
    return resources.files("tickets").joinpath("policy.yaml").read_text("utf-8")


def _register(service: Service, spec: FleetSpec) -> list[DemoLogin]:
    """Put the district into the registry, with its names; make the demo users."""
    registry = RegistryFile.model_validate(registry_document(spec))
    parts = service.parts
    assert parts is not None, "the service has started"
    parts.repository.upsert_institutions(registry.institutions)
    parts.repository.upsert_devices(registry.devices)
    parts.directory.load()
    parts.institutions.load()
    return ensure_demo_accounts(parts.accounts, spec)


def banner(
    settings: Settings, broker_url: str, token: str | None, logins: list[DemoLogin], story: str
) -> str:
    """What the demo prints at start: where to look and how to log in, Chinese and English."""
    scheme = "https" if settings.api.tls else "http"
    api = f"{scheme}://{settings.api_host}:{settings.api_port}"
    shown = token or "(已吊销 revoked: use a user's token)"
    lines = [
        "",
        "hazardwatch 演示已启动 / demo is running   (Ctrl-C 停止 / stops it)",
        "",
        f"  控制台 console     {settings.console_url}/",
        "  登录 logins        用户名 username / 密码 password (每次启动重新生成 new at each start)",
    ]
    for login in logins:
        secret = login.password or "(已有同名用户,未改动 / an existing user: left alone)"
        who = f"{login.role_zh} {login.role_en}"
        lines.append(f"    {login.user.name:<11} {secret:<15} {who}")
    lines += [
        "",
        f"  剧情 story         {story}",
        f"  MQTT 代理 broker   {broker_url}   (topics hazardwatch/v1/#)",
        f"  接口 HTTP API      {api}/docs   {api}/readyz   {api}/metrics",
        f"  API 令牌 token     Authorization: Bearer {shown}",
        f"  数据 data          {settings.data_dir.resolve()}",
        "",
    ]
    return "\n".join(lines)


def _story_line(args: argparse.Namespace) -> str:
    if args.no_story:
        return "关闭 off (--no-story)"
    names = ", ".join(scenario.name for _, scenario in LINEUP)
    lead = DEFAULT_LEAD_S / args.story_speed
    every = args.story_interval / args.story_speed
    return (
        f"{lead:g} 秒后开始,每 {every:g} 秒一轮 / starts in {lead:g} s, "
        f"a round every {every:g} s: {names}"
    )


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Start everything; stop on SIGINT/SIGTERM or after --duration/--count."""
    settings = demo_settings(settings, args)
    spec = demo_fleet(args)
    service = Service(settings, embedded_broker_port=args.embedded_broker_port)
    stop = asyncio.Event()

    async def simulate(started: Service) -> None:
        logins = await asyncio.to_thread(_register, started, spec)
        broker_url = started.broker.url if started.broker else (settings.mqtt_url or "")
        token = admin_token(settings)
        text = banner(settings, _hide_password(broker_url), token, logins, _story_line(args))
        print(text, flush=True)
        options = _options(args, broker_url)
        simulation = Simulation(
            options, Fleet(spec, seed=args.seed, prefix=DEFAULT_PREFIX, malformed=args.malformed)
        )
        stats = await _run_with_story(simulation, spec, args, stop, settings.display.zone)
        print(stats.summary(), flush=True)
        stop.set()
        # A supervised task runs until cancelled: returning now would be taken for a crash
        # (and the fleet started again) before the shutdown begins.
        await asyncio.Event().wait()

    await run(service, stop, companion=simulate)
    return 0


async def _run_with_story(
    simulation: Simulation,
    spec: FleetSpec,
    args: argparse.Namespace,
    stop: asyncio.Event,
    zone: tzinfo,
) -> RunStats:
    if args.no_story:
        return await simulation.run(stop)
    story = Story(
        spec,
        SimulationStage(simulation),
        interval_s=args.story_interval,
        speed=args.story_speed,
        say=lambda text: print(text, flush=True),
        zone=zone,
    )
    telling = asyncio.create_task(story.run(), name="demo-story")
    try:
        return await simulation.run(stop)
    finally:
        telling.cancel()
        await asyncio.gather(telling, return_exceptions=True)


def _options(args: argparse.Namespace, broker_url: str) -> SimOptions:
    return SimOptions(
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


def _hide_password(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"

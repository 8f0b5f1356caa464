"""Simulators: payloads follow contract section 1, bad input is really bad, runs are repeatable."""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from core.errors import ConfigError
from core.models import ID_RE, MAX_PAYLOAD_BYTES, DeviceKind, EventSource, EventType, FaultCode
from core.registry.models import RegistryFile
from ingest.messages import Accepted, RawMessage
from ingest.parser import Parser
from simulators import cli
from simulators.device import SimDevice
from simulators.fleet import Fleet
from simulators.mqtt import BrokerURL
from simulators.pacing import Pacer
from simulators.payloads import (
    EXPECTED_REASON,
    MALFORMED,
    MalformedKind,
    malformed_of,
    malformed_payload,
    rfc3339_ms,
)
from simulators.plan import RunStats, SimOptions, plan_connections, plan_processes
from simulators.registry import DeviceSpec, build_fleet_spec, heartbeat_for, registry_document

NOW_MS = 1_795_334_400_000  # 2026-11-22T08:00:00Z
PREFIX = "hazardwatch/v1"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RANGES = {
    "smoke_db_m": (0.0, math.inf),
    "gas_lel_pct": (0.0, 100.0),
    "co_ppm": (0.0, math.inf),
    "temperature_c": (-math.inf, math.inf),
    "battery_pct": (0.0, 100.0),
    "rssi_dbm": (-math.inf, math.inf),
}


class Bad(Exception):
    """Why a message breaks contract section 1 (named like ingest's dead-letter reasons)."""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _refuse(name: str) -> object:
    raise ValueError(name)


def _check_ts(value: object) -> None:
    if isinstance(value, str) and RFC3339_MS.match(value):
        moment = datetime.fromisoformat(value).timestamp() * 1000
    elif isinstance(value, int) and not isinstance(value, bool):
        moment = value
    else:
        raise Bad("bad_timestamp")
    if moment - NOW_MS > 300_000:
        raise Bad("future_timestamp")


def _check_fields(channel: str, body: dict[str, object]) -> None:
    if "ts" in body:
        _check_ts(body["ts"])
    seq = body.get("seq", 0)
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
        raise Bad("invalid_field")
    if channel == "event":
        _check_event(body)
        return
    allowed = {"ts", "seq", "kind", "alarm", "faults", *RANGES}
    if set(body) - allowed or body.get("kind", "smoke") not in set(DeviceKind):
        raise Bad("invalid_field")
    for name, (low, high) in RANGES.items():
        if name in body and not (_number(body[name]) and low <= body[name] <= high):  # type: ignore[operator]
            raise Bad("invalid_field")
    faults = body.get("faults", [])
    if not isinstance(body.get("alarm", False), bool) or not isinstance(faults, list):
        raise Bad("invalid_field")
    if any(code not in set(FaultCode) for code in faults):
        raise Bad("invalid_field")


def _check_event(body: dict[str, object]) -> None:
    if set(body) - {"ts", "seq", "type", "source", "code", "detail"}:
        raise Bad("invalid_field")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in set(EventType):
        raise Bad("invalid_field")
    if body.get("source", "smoke") not in set(EventSource):
        raise Bad("invalid_field")
    if kind in ("fault", "fault_clear") and body.get("code") not in set(FaultCode):
        raise Bad("invalid_field")
    if not isinstance(body.get("detail", ""), str):
        raise Bad("invalid_field")


def check(topic: str, payload: bytes) -> dict[str, object] | str:
    """The decoded object when the message conforms; else the reason it does not."""
    try:
        parts = topic.split("/")
        if len(parts) != 5 or "/".join(parts[:2]) != PREFIX:
            raise Bad("unknown_topic")
        if parts[4] not in ("telemetry", "event", "status"):
            raise Bad("unknown_topic")
        if not (ID_RE.match(parts[2]) and ID_RE.match(parts[3])):
            raise Bad("invalid_id")
        if not payload:
            raise Bad("empty_payload")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise Bad("oversized_payload")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad("bad_encoding") from None
        if parts[4] == "status" and text in ("online", "offline"):
            return {"state": text}
        try:
            body = json.loads(text, parse_constant=_refuse)
        except ValueError:
            raise Bad("bad_json") from None
        if not isinstance(body, dict):
            raise Bad("not_an_object")
        if parts[4] == "status":
            ok = body.get("state") in ("online", "offline") and body.get("heartbeat_s", 1) > 0
            return body if ok else "bad_status"
        _check_fields(parts[4], body)
        return body
    except Bad as bad:
        return str(bad)


def _spec(kind: DeviceKind, number: int = 1) -> DeviceSpec:
    code = {"smoke": "smk", "gas": "gas", "co": "co", "multi": "mul"}[kind.value]
    return DeviceSpec(f"inst-001-{code}-{number:03d}", "inst-001", kind, "M1", "1号楼", 2, "201")


def _readings(messages: list[tuple[str, dict[str, object]]]) -> list[dict[str, object]]:
    """The telemetry with readings (no heartbeats, no events)."""
    return [body for channel, body in messages if channel == "telemetry" and "alarm" in body]


def _drain(device: SimDevice, count: int) -> list[tuple[str, dict[str, object]]]:
    out = []
    for step in range(count):
        message = device.next_message(NOW_MS + step)
        assert message is not None
        body = check(message.topic, message.payload)
        assert isinstance(body, dict), (message, body)
        out.append((message.topic.rsplit("/", 1)[1], body))
    return out


@pytest.mark.parametrize("kind", list(DeviceKind))
def test_device_messages_conform_and_stay_quiet(kind: DeviceKind) -> None:
    device = SimDevice(_spec(kind), seed=7)
    messages = _drain(device, 3000)
    assert [body["seq"] for _, body in messages] == list(range(3000))
    readings = _readings(messages)
    assert len(readings) > 2500
    for body in readings:
        assert body["kind"] == kind.value
        assert ("battery_pct" in body) is (kind is not DeviceKind.GAS)
        assert 16 <= body["temperature_c"] <= 28 and -95 <= body["rssi_dbm"] <= -55  # type: ignore[operator]
        assert body.get("smoke_db_m", 0) <= 0.05 and body.get("gas_lel_pct", 0) <= 3  # type: ignore[operator]
        assert body.get("co_ppm", 0) <= 5  # type: ignore[operator]


def test_status_payloads() -> None:
    device = SimDevice(_spec(DeviceKind.SMOKE))
    online = device.status_online(NOW_MS)
    body = check(online.topic, online.payload)
    assert online.retain and isinstance(body, dict) and body["heartbeat_s"] == 300
    offline = device.status_offline()
    assert offline.retain and offline.payload == b"offline" and offline.topic.endswith("/status")


def test_smoke_alarm_scenario() -> None:
    device = SimDevice(_spec(DeviceKind.SMOKE))
    _drain(device, 5)
    device.start_alarm()
    (_, before), (_, alarmed), (channel, event) = _drain(device, 3)
    assert before["alarm"] is False and alarmed["alarm"] is True
    assert alarmed["smoke_db_m"] > 0.15  # type: ignore[operator]
    assert channel == "event" and event["type"] == "alarm" and event["source"] == "smoke"
    later = _readings(_drain(device, 20))
    assert all(body["alarm"] is True and body["smoke_db_m"] >= 0.15 for body in later)  # type: ignore[operator]
    device.clear_alarm()
    (_, cleared), (_, event) = _drain(device, 2)
    assert cleared["alarm"] is False and event["type"] == "alarm_clear"


def test_alarm_source_on_a_multi_sensor() -> None:
    device = SimDevice(_spec(DeviceKind.MULTI))
    device.start_alarm(EventSource.CO)
    (_, _), (_, alarmed), (_, event) = _drain(device, 3)
    assert alarmed["co_ppm"] >= 60 and event["source"] == "co"  # type: ignore[operator]
    with pytest.raises(ValueError, match="no gas sensor"):
        SimDevice(_spec(DeviceKind.SMOKE)).start_alarm(EventSource.GAS)


def test_a_burst_never_repeats_a_timestamp() -> None:
    device = SimDevice(_spec(DeviceKind.SMOKE))
    device.start_alarm()
    burst = [device.next_message(NOW_MS) for _ in range(3)]
    stamps = [json.loads(m.payload)["ts"] for m in burst if m is not None]
    assert len(set(stamps)) == 3 and stamps == sorted(stamps)


def test_gas_ramp_alarms_when_crossing_the_threshold() -> None:
    device = SimDevice(_spec(DeviceKind.GAS))
    device.gas_ramp(40.0, steps=4)
    bodies = [body for _, body in _drain(device, 5)]
    assert [b.get("gas_lel_pct") for b in bodies if "gas_lel_pct" in b][-1] == 40.0
    assert [b["type"] for b in bodies if "type" in b] == ["alarm"]
    device.gas_ramp(1.0, steps=2)
    assert "alarm_clear" in [body.get("type") for _, body in _drain(device, 3)]
    with pytest.raises(ValueError, match="no gas sensor"):
        SimDevice(_spec(DeviceKind.SMOKE)).gas_ramp(30.0)


def test_fault_battery_and_silence() -> None:
    device = SimDevice(_spec(DeviceKind.CO))
    device.fault(FaultCode.SENSOR_FAULT)
    (_, event), *rest = _drain(device, 6)
    assert event == {**event, "type": "fault", "code": "sensor_fault"}
    assert _readings(rest)[0]["faults"] == ["sensor_fault"]
    device.clear_fault(FaultCode.SENSOR_FAULT)
    assert _drain(device, 1)[0][1]["type"] == "fault_clear"
    device.battery = 20.001
    assert "battery_low" in [body.get("type") for _, body in _drain(device, 3)]
    device.go_silent()
    assert device.next_message(NOW_MS) is None
    device.resume()
    assert device.next_message(NOW_MS) is not None


def test_fleet_ids_registry_and_determinism() -> None:
    spec = build_fleet_spec(4, 30, seed=5)
    document = registry_document(spec)
    RegistryFile.model_validate(document)
    assert [i["id"] for i in document["institutions"]] == [f"inst-00{n}" for n in range(1, 5)]
    assert all(re.fullmatch(r"inst-00\d-(smk|gas|co|mul)-\d{3}", d.id) for d in spec.devices)
    assert len({d.id for d in spec.devices}) == 30
    assert registry_document(build_fleet_spec(4, 30, seed=5)) == document
    assert registry_document(build_fleet_spec(4, 30, seed=6)) != document
    first, again = (
        Fleet.build(4, 30, seed=5, malformed=0.1),
        Fleet.build(4, 30, seed=5, malformed=0.1),
    )
    assert [first.next_message(NOW_MS) for _ in range(300)] == [
        again.next_message(NOW_MS) for _ in range(300)
    ]


def test_fleet_turns_scenarios_and_malformed_share() -> None:
    fleet = Fleet.build(2, 10, seed=3)
    turns = [fleet.next_message(NOW_MS) for _ in range(10)]
    assert sorted(index for index, _ in filter(None, turns)) == list(range(10))
    device = fleet.devices[7]
    device.start_alarm()
    picked = fleet.next_message(NOW_MS)
    assert picked is not None and picked[0] == 7
    assert fleet.next_message(NOW_MS, ready=lambda index: index == 4)[0] == 4  # type: ignore[index]
    noisy = Fleet.build(2, 10, seed=3, malformed=0.25)
    labels = [noisy.next_message(NOW_MS)[1].label for _ in range(4000)]  # type: ignore[index]
    assert 0.2 < labels.count(MALFORMED) / 4000 < 0.3


async def test_registry_file_round_trip(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    path = tmp_path / "registry.yaml"
    args = parser.parse_args(["--devices", "9", "--export-registry", str(path)])
    assert cli.options_from_args(args).rate == 2.0
    assert await cli.run(args) == 0
    registry = RegistryFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert len(registry.institutions) == 3 and len(registry.devices) == 9
    assert registry.devices[0].zone == "1号楼-1F"


@pytest.mark.parametrize("kind", list(MalformedKind))
def test_every_malformed_kind_is_really_bad(kind: MalformedKind) -> None:
    rng = random.Random(kind.value)
    for _ in range(40):
        topic, payload, reason = malformed_of(kind, rng, now_ms=NOW_MS)
        assert reason == EXPECTED_REASON[kind]
        assert check(topic, payload) == reason, (topic, payload[:200])


def test_malformed_payload_draws_every_kind() -> None:
    rng = random.Random(1)
    reasons = {malformed_payload(rng, now_ms=NOW_MS)[2] for _ in range(400)}
    assert reasons == set(EXPECTED_REASON.values())


def test_ingest_parser_rejects_malformed_with_the_expected_reason() -> None:
    parser = Parser(PREFIX)
    received = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    rng = random.Random(2)
    for kind in MalformedKind:
        for _ in range(20):
            topic, payload, reason = malformed_of(kind, rng, now_ms=NOW_MS)
            verdict = parser.parse(RawMessage(topic, payload, received))
            assert getattr(verdict, "reason", None) == reason, (kind, topic, payload[:120])
    device = SimDevice(_spec(DeviceKind.MULTI))
    for _ in range(200):
        message = device.next_message(NOW_MS)
        assert message is not None
        verdict = parser.parse(RawMessage(message.topic, message.payload, received))
        assert isinstance(verdict, Accepted), verdict


def test_pacer_keeps_the_rate_without_drift() -> None:
    pacer = Pacer(10_000.0, start=100.0)
    rng = random.Random(0)
    now, taken = 100.0, 0
    while now < 110.0:
        taken += pacer.take(now, limit=1000)
        now += rng.uniform(0.0005, 0.008)
    taken += pacer.take(110.0, limit=10**6)
    assert taken == 100_001 and pacer.skipped == 0
    assert pacer.delay(110.0) == pytest.approx(0.0001)


def test_pacer_skips_backlog_after_a_stall() -> None:
    pacer = Pacer(100.0, start=0.0, max_lag_s=1.0)
    assert pacer.take(0.0, 10) == 1 and pacer.due(0.0) == 0 and pacer.delay(0.0) == 0.01
    assert pacer.take(5.0, 10**6) == 100
    assert pacer.skipped == 400 and pacer.taken == 501
    with pytest.raises(ValueError):
        Pacer(0.0, start=0.0)


def test_connection_and_process_plans() -> None:
    broker = BrokerURL("localhost", 1883)
    assert plan_connections(200, None) is None and plan_connections(201, None) == 8
    assert plan_connections(12, 4) == 4 and plan_connections(12, 12) is None
    options = SimOptions(broker, devices=1000, rate=12_000, connections=5, count=1001, processes=2)
    shares = options.shares()
    assert [s.own_connections for s in shares] == [3, 2]
    assert sum(s.own_count or 0 for s in shares) == 1001
    assert sum(s.own_rate for s in shares) == 12_000
    assert plan_processes(SimOptions(broker, devices=3, rate=50_000)) <= 3
    assert plan_processes(SimOptions(broker, rate=2.0)) == 1


def test_heartbeat_follows_the_device_period() -> None:
    assert heartbeat_for(12, 2.0) == 300
    assert heartbeat_for(10_000, 2.0) == 15_000  # 3 x 5,000 s, in whole minutes
    assert heartbeat_for(10, 0.00001) == 7 * 24 * 3600


def test_broker_url_and_backoff() -> None:
    url = BrokerURL.parse("mqtt://user:p%40ss@broker.example:1884")
    assert (url.host, url.port, url.username, url.password, url.tls) == (
        "broker.example", 1884, "user", "p@ss", False,
    )  # fmt: skip
    assert BrokerURL.parse("mqtts://h").port == 8883 and "p@ss" not in str(url)
    with pytest.raises(ConfigError):
        BrokerURL.parse("http://h")


def test_stats_summary_and_timestamps() -> None:
    stats = RunStats(10.0, elapsed=2.0)
    stats.sent.update({"telemetry": 15, "event": 3, "malformed": 2, "status": 4})
    merged = RunStats.merge(10.0, [stats, stats])
    assert merged.paced == 40 and merged.achieved_rate == 20.0
    assert "telemetry=30" in merged.summary() and "malformed=4" in merged.summary()
    assert rfc3339_ms(NOW_MS + 120) == "2026-11-22T08:00:00.120Z"

"""Alarm and ticket latency and offline-detection error of `hazardwatch run`, under load.

    .venv/bin/python -m bench.alert_latency [--alarms 1000] [--load 10000] [--offline 200]
                                            [--faults 300]

Real Mosquitto and InfluxDB 1.x, hazardwatch as its own process (as deployed). A load
generator process keeps publishing ordinary readings from 1,000 devices at `--load` msg/s while:

1. `--alarms` detectors, one after another (20 a second), publish an `alarm` event. Latency is
   from just before the publish to the moment the `smoke_alarm` arrives on GET /api/v1/stream,
   both clocks in this process. Baseline in the same run: the same message from publish to a
   bare paho subscriber of the broker — the part of the latency that is not hazardwatch's.
2. `--faults` of the alarming detectors then report a `sensor_fault`, 20 a second: from the
   publish to the `ticket` event `opened` on the stream (sent after the ticket is committed, so
   the API shows it then; the benchmark checks the API's count at the end).
3. `--offline` detectors with a heartbeat of 2 s send one reading each and fall silent. Their
   deadline is 5 s (2.5 × heartbeat) after that reading; the error is how late `device_offline`
   arrives on the stream after it.

4. With `--database postgres --hung`: PostgreSQL is stopped with SIGSTOP (postmaster and
   backends: a database that hangs) and `--alarms` other detectors alarm as in 1; then it is
   let go, and the benchmark waits until every one of them is an alert row in SQL.

Prints p50, p99 and max of each, the background rate hazardwatch actually received, and the
machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import Container
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.ingest_throughput import message
from bench.loadgen import publish_fast
from bench.machine import cpu_share_printed, describe
from core.settings import parse_mqtt_url
from tests.integration.service_process import ServiceProcess, StreamReader
from tests.servers import InfluxDB1, Mosquitto, Postgres

PREFIX = "hazardwatch/v1"
ALARMS_PER_S = 20.0
HEARTBEAT_S = 2
OFFLINE_FACTOR = 2.5


def percentiles(values: list[float]) -> str:
    """p50, p99 and max in milliseconds."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   "
        f"max {ordered[-1] * 1000:7.1f} ms   (n = {len(ordered)})"
    )


class RawSubscriber:
    """A bare paho subscriber: when each alarm event reaches a client of the broker."""

    def __init__(self, url: str) -> None:
        endpoint = parse_mqtt_url(url)
        self.seen: dict[str, float] = {}
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}"
        )
        self._client.on_message = self._on_message
        self._client.connect(endpoint.host, endpoint.port)
        self._client.subscribe(f"{PREFIX}/+/+/event", qos=1)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.seen[msg.topic.split("/")[-2]] = time.monotonic()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def received_total(service: ServiceProcess) -> float:
    """hazardwatch_messages_received_total, all channels (/metrics takes the admin token)."""
    text = service.api("GET", "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hazardwatch_messages_received_total")
    )


def raised_at(stream: StreamReader, kind: str, devices: Container[str]) -> dict[str, float]:
    """When the stream showed an alert of `kind` raised, for each of `devices` it has shown."""
    return {
        body["alert"]["device"]: at
        for at, event, body in list(stream.events)
        if event == "alert"
        and body["action"] == "raised"
        and body["alert"]["kind"] == kind
        and body["alert"]["device"] in devices
    }


def alarms(
    service: ServiceProcess, url: str, stream: StreamReader, count: int, first: int = 0
) -> tuple[list[float], list[float], float]:
    """(hazardwatch latencies, broker latencies, background msg/s received meanwhile)."""
    raw = RawSubscriber(url)
    endpoint = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"alarm-{uuid.uuid4().hex[:8]}")
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    sent: dict[str, float] = {}
    before, started = received_total(service), time.monotonic()
    for i in range(first, first + count):
        device = f"alarm-{i:05d}"
        # One institution each: two alarms of one zone would be a fire_confirmed, not the point.
        topic = f"{PREFIX}/lat-{i:05d}/{device}/event"
        body = json.dumps({"seq": 1, "type": "alarm", "source": "smoke"})
        delay = started + (i - first) / ALARMS_PER_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[device] = time.monotonic()
        client.publish(topic, body, qos=1)
    background = (received_total(service) - before - count) / (time.monotonic() - started)
    deadline = time.monotonic() + 30
    arrived: dict[str, float] = {}
    while len(arrived) < count and time.monotonic() < deadline:
        arrived = raised_at(stream, "smoke_alarm", sent)
        time.sleep(0.2)
    client.disconnect()
    client.loop_stop()
    raw.close()
    missing = count - len(arrived)
    if missing:
        raise RuntimeError(f"{missing} of {count} alarms never reached the stream")
    ours = [arrived[d] - t for d, t in sent.items()]
    broker = [raw.seen[d] - t for d, t in sent.items() if d in raw.seen]
    return ours, broker, background


def faults(
    service: ServiceProcess, url: str, stream: StreamReader, count: int
) -> tuple[list[float], list[float], list[float]]:
    """From a detector's `fault` event to its hazard ticket on the stream (and in the API):
    (the whole way, publish -> `device_fault` alert, that alert -> the ticket)."""
    endpoint = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fault-{uuid.uuid4().hex[:8]}")
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    sent: dict[str, float] = {}
    started = time.monotonic()
    for i in range(count):
        device = f"alarm-{i:05d}"
        body = json.dumps({"seq": 2, "type": "fault", "code": "sensor_fault"})
        delay = started + i / ALARMS_PER_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[device] = time.monotonic()
        client.publish(f"{PREFIX}/lat-{i:05d}/{device}/event", body, qos=1)
    opened: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while len(opened) < count and time.monotonic() < deadline:
        opened = {
            body["ticket"]["device"]: at
            for at, event, body in list(stream.events)
            if event == "ticket" and body["action"] == "opened" and body["ticket"]["device"] in sent
        }
        time.sleep(0.2)
    client.disconnect()
    client.loop_stop()
    if len(opened) < count:
        raise RuntimeError(f"{count - len(opened)} of {count} faults opened no ticket")
    listed = service.api("GET", "/api/v1/tickets", params={"category": "device_fault"})
    if int(listed.headers["X-Total-Count"]) != count:
        raise RuntimeError(f"the API lists {listed.headers['X-Total-Count']} tickets, not {count}")
    raised = raised_at(stream, "device_fault", sent)
    return (
        [opened[d] - t for d, t in sent.items()],
        [raised[d] - t for d, t in sent.items() if d in raised],
        [opened[d] - raised[d] for d in sent if d in raised],
    )


def offline(url: str, stream: StreamReader, count: int) -> list[float]:
    """How late each device_offline arrives after its deadline (negative: early)."""
    endpoint = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"quiet-{uuid.uuid4().hex[:8]}")
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    deadlines: dict[str, float] = {}
    window = OFFLINE_FACTOR * HEARTBEAT_S
    for i in range(count):
        device = f"quiet-{i:04d}"
        info = client.publish(f"{PREFIX}/quiet/{device}/telemetry", b'{"seq": 1}', qos=1)
        deadlines[device] = time.monotonic() + window
        info.wait_for_publish(5)
        time.sleep(window / count)  # spread over one window
    time.sleep(window + 3)
    client.disconnect()
    client.loop_stop()
    fired = raised_at(stream, "device_offline", deadlines)
    missing = count - len(fired)
    if missing:
        raise RuntimeError(f"{missing} of {count} silent devices were never reported offline")
    return [fired[d] - deadline for d, deadline in deadlines.items()]


def registry(alarms: int, silent: int) -> str:
    """The alarming detectors (one institution each) and the silent ones (short heartbeat).

    Registered beforehand, as a monitoring centre's devices are: the background fleet is
    auto-registered during the warm-up.
    """
    lines = ["institutions:", "  - {id: quiet, name: 静默测试, type: elderly_care}"]
    lines += [f"  - {{id: lat-{i:05d}, name: 测试{i}, type: elderly_care}}" for i in range(alarms)]
    lines.append("devices:")
    lines += [
        f"  - {{id: alarm-{i:05d}, institution: lat-{i:05d}, kind: smoke}}" for i in range(alarms)
    ]
    lines += [
        f"  - {{id: quiet-{i:04d}, institution: quiet, kind: smoke, heartbeat_s: {HEARTBEAT_S}}}"
        for i in range(silent)
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run both measurements under load and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--load", type=float, default=10_000, help="background msg/s")
    parser.add_argument("--offline", type=int, default=200, help="devices that fall silent")
    parser.add_argument("--faults", type=int, default=300, help="faults that open tickets")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--hung", action="store_true", help="then alarms again with PostgreSQL hung (SIGSTOP)"
    )
    args = parser.parse_args()
    if args.hung and args.database != "postgres":
        parser.error("--hung needs --database postgres")
    print(describe())
    with tempfile.TemporaryDirectory() as tmp, cpu_share_printed():
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto").start()
        influx = InfluxDB1(work / "influx").start()
        influx.create_database("bench")
        env = {
            "HAZARDWATCH_MQTT_URL": broker.url,
            "HAZARDWATCH_INFLUX_URL": influx.url,
            "HAZARDWATCH_INFLUX_API": "v1",
            "HAZARDWATCH_INFLUX_DB": "bench",
        }
        postgres = None
        if args.database == "postgres":
            postgres = Postgres(work / "postgres").start()
            env["HAZARDWATCH_DATABASE_URL"] = postgres.create_database("bench")
        service = ServiceProcess(work, env)
        devices = args.alarms * (2 if args.hung else 1)
        (work / "registry.yaml").write_text(registry(devices, args.offline), encoding="utf-8")
        service.hazardwatch("registry", "import", str(work / "registry.yaml"))
        load: multiprocessing.Process | None = None
        try:
            service.start()
            stream = StreamReader(service)
            phases = (args.alarms + args.faults) / ALARMS_PER_S
            seconds = 10 + phases + 2 * OFFLINE_FACTOR * HEARTBEAT_S + 60
            load = multiprocessing.Process(
                target=publish_fast,
                args=(broker.url, functools.partial(message, PREFIX), int(args.load * seconds)),
                kwargs={"rate": args.load},
                daemon=True,
            )
            load.start()
            time.sleep(5)  # warm up: every background device known
            print(
                f"alarms: {args.alarms} at {ALARMS_PER_S:.0f}/s, background load {args.load:,.0f}"
                f" msg/s of readings from 1,000 devices (QoS 1)"
            )
            ours, raw, background = alarms(service, broker.url, stream, args.alarms)
            print(f"background actually received by hazardwatch: {background:,.0f} msg/s")
            print(f"baseline  publish -> bare paho subscriber:  {percentiles(raw)}")
            print(f"hazardwatch publish -> SSE stream:        {percentiles(ours)}")
            if args.faults:
                tickets, alerted, opened = faults(
                    service, broker.url, stream, min(args.faults, args.alarms)
                )
                print(f"hazardwatch fault -> ticket on the stream: {percentiles(tickets)}")
                print(f"  of which publish -> device_fault alert:  {percentiles(alerted)}")
                print(f"  and device_fault alert -> ticket:        {percentiles(opened)}")
            late = offline(broker.url, stream, args.offline)
            print(
                f"offline detection, lateness after the deadline ({args.offline} devices, "
                f"heartbeat {HEARTBEAT_S} s): {percentiles(late)}; "
                f"earliest {min(late) * 1000:.1f} ms"
            )
            if args.hung and postgres is not None:
                hung(service, broker.url, stream, postgres, args.alarms)
        finally:
            if load is not None:
                load.terminate()
            service.stop()
            influx.stop()
            broker.stop()
            if postgres is not None:
                postgres.resume()
                postgres.cleanup()


def hung(
    service: ServiceProcess, url: str, stream: StreamReader, postgres: Postgres, count: int
) -> None:
    """Alarms while PostgreSQL hangs; then every one of them must become an alert row."""
    postgres.pause()
    try:
        ours, raw, background = alarms(service, url, stream, count, first=count)
    finally:
        postgres.resume()
    print(f"PostgreSQL hung (SIGSTOP): background received {background:,.0f} msg/s")
    print(f"baseline  publish -> bare paho subscriber:  {percentiles(raw)}")
    print(f"hazardwatch publish -> SSE stream, PostgreSQL hung: {percentiles(ours)}")
    resumed = time.monotonic()
    deadline = resumed + 120
    stored = 0
    while time.monotonic() < deadline:
        response = service.api(
            "GET", "/api/v1/alerts", params={"kind": "smoke_alarm", "limit": "1000"}
        )
        if response.status_code == 200:
            stored = len([a for a in response.json() if int(a["device"][6:]) >= count])
            if stored == count:
                break
        time.sleep(0.5)
    print(
        f"after PostgreSQL came back: {stored} of {count} alert rows in SQL "
        f"within {time.monotonic() - resumed:.1f} s"
    )


if __name__ == "__main__":
    main()

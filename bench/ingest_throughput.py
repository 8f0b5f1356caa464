"""Ingest throughput against real Mosquitto and InfluxDB 1.x, with baselines from the same run.

Method: a persistent session is created, N messages are queued for it in Mosquitto while the
subscriber is away, then the subscriber connects and drains them. That measures what the
subscriber sustains, without a publisher competing for the same two cores.

    .venv/bin/python -m bench.ingest_throughput [--messages 100000]

Prints, for the same machine and run:
- raw broker: a bare paho-mqtt subscriber (QoS 1, automatic PUBACK, json.loads) — the ceiling;
  and a bare aiomqtt subscriber the same way;
- raw database: batched line-protocol writes of 5,000 points straight to InfluxDB;
- the peer: Node-RED MQTT in -> InfluxDB out (../shared/peers/nodered), with a live publisher,
  and hazardwatch measured the same way beside it. The publisher (bench/loadgen.py) sends
  pre-encoded packets, more than ten times faster than either subscriber, so that a live
  figure measures the subscriber and not the publisher;
- hazardwatch ingest at several in-flight windows (MQTT 5 Receive Maximum): messages/s until
  every message is durable and acknowledged, and until every point is in InfluxDB.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.loadgen import publish_fast, publish_fast_in_process
from bench.machine import cpu_share_printed, describe
from bench.peers import NodeRed, aiomqtt_drain, count_points, drain_rate, nodered
from core.db import make_engine, session_factory, upgrade
from core.registry.directory import DeviceDirectory
from core.registry.repository import RegistryRepository
from core.settings import parse_mqtt_url
from ingest.sinks.influx_v1 import InfluxV1Sink
from ingest.stage import IngestStage
from tests.running import Running
from tests.servers import InfluxDB1, Mosquitto

DEVICES = 1000
# A day ago: device times older than the parser's age limit (30 days) are dead letters.
BASE_MS = (int(time.time()) - 86_400) * 1000


def payload(i: int) -> bytes:
    """A reading like the contract's example (about 200 bytes)."""
    body = {
        "ts": BASE_MS + i,
        "seq": i // DEVICES,
        "kind": "gas",
        "gas_lel_pct": round(3.5 + (i % 10) / 10, 1),
        "temperature_c": 22.5,
        "battery_pct": 87,
        "rssi_dbm": -71,
        "alarm": False,
        "faults": [],
    }
    return json.dumps(body).encode()


def message(prefix: str, i: int) -> tuple[str, bytes]:
    """Message `i`: one of DEVICES devices in 50 institutions."""
    return f"{prefix}/inst-{i % 50:03d}/dev-{i % DEVICES:04d}/telemetry", payload(i)


def publish(url: str, prefix: str, count: int, first: int = 0) -> None:
    """Publish messages `first` … `first + count - 1` at QoS 1 from another process."""
    publish_fast_in_process(url, functools.partial(message, prefix), count, first)


def queue_for(broker: Mosquitto, client_id: str, prefix: str, count: int) -> None:
    """Create a persistent MQTT 5 session for `client_id` and queue `count` messages for it."""
    endpoint = parse_mqtt_url(broker.url)
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    sub.connect(endpoint.host, endpoint.port, clean_start=True, properties=props)
    sub.loop_start()
    sub.subscribe(f"{prefix}/#", qos=1)
    time.sleep(0.3)
    sub.disconnect()
    sub.loop_stop()
    publish(broker.url, prefix, count)


def raw_broker(broker: Mosquitto, count: int) -> float:
    """Drain rate of a bare paho subscriber with automatic acknowledgement."""
    prefix, client_id = f"raw-{uuid.uuid4().hex[:6]}/hazardwatch/v1", "bench-raw"
    queue_for(broker, client_id, prefix, count)
    received = 0
    done = multiprocessing.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal received
        json.loads(msg.payload)
        received += 1
        if received == count:
            done.set()

    endpoint = parse_mqtt_url(broker.url)
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    start = time.perf_counter()
    sub.connect(endpoint.host, endpoint.port, clean_start=False, properties=props)
    sub.loop_start()
    done.wait(600)
    elapsed = time.perf_counter() - start
    sub.disconnect()
    sub.loop_stop()
    return count / elapsed


def raw_database(influx: InfluxDB1, count: int) -> float:
    """Points per second for batched writes of 5,000 points straight to InfluxDB."""
    influx.create_database("rawbench")
    lines = [
        f"reading,institution=inst-{i % 50:03d},device=dev-{i % DEVICES:04d},kind=gas "
        f"gas_lel_pct=3.5,temperature_c=22.5,battery_pct=87,rssi_dbm=-71,alarm=false,"
        f"seq={i // DEVICES}i {BASE_MS + i}"
        for i in range(count)
    ]
    with httpx.Client(base_url=influx.url, timeout=60) as client:
        start = time.perf_counter()
        for offset in range(0, count, 5000):
            body = "\n".join(lines[offset : offset + 5000]).encode()
            response = client.post(
                "/write", params={"db": "rawbench", "precision": "ms"}, content=body
            )
            response.raise_for_status()
        return count / (time.perf_counter() - start)


def hazardwatch(
    broker: Mosquitto, influx: InfluxDB1, count: int, window: int, work: Path
) -> tuple[float, float]:
    """(durable and acknowledged msg/s, stored in InfluxDB msg/s) for one in-flight window."""
    prefix, client_id = f"hw{window}-{uuid.uuid4().hex[:6]}/hazardwatch/v1", f"bench-hw-{window}"
    db = f"hw{window}"
    influx.create_database(db)
    queue_for(broker, client_id, prefix, count)
    url = f"sqlite:///{work / f'hw{window}.sqlite'}"
    upgrade(url)
    directory = DeviceDirectory(
        RegistryRepository(session_factory(make_engine(url))), auto_register=True
    )
    stage = IngestStage(
        data_dir=work / f"data{window}",
        sink=InfluxV1Sink(influx.url, db),
        directory=directory,
        endpoint=parse_mqtt_url(broker.url),
        client_id=client_id,
        prefix=prefix,
        receive_maximum=window,
    )
    start = time.perf_counter()
    running = Running(stage.tasks(), stage.shutdown).start()
    while stage.spool.committed_lsn < count:
        time.sleep(0.005)
    durable = time.perf_counter() - start
    while stage.spool.checkpoint_lsn < count:
        time.sleep(0.005)
    stored = time.perf_counter() - start
    running.stop()
    stage.close()
    return count / durable, count / stored


def hazardwatch_live(broker: Mosquitto, influx: InfluxDB1, count: int, work: Path) -> float:
    """Msg/s into InfluxDB while a publisher sends `count` messages: how the peer is measured."""
    prefix = f"live-{uuid.uuid4().hex[:6]}/hazardwatch/v1"
    influx.create_database("live")
    url = f"sqlite:///{work / 'live.sqlite'}"
    upgrade(url)
    stage = IngestStage(
        data_dir=work / "data-live",
        sink=InfluxV1Sink(influx.url, "live"),
        directory=DeviceDirectory(
            RegistryRepository(session_factory(make_engine(url))), auto_register=True
        ),
        endpoint=parse_mqtt_url(broker.url),
        client_id=f"bench-live-{uuid.uuid4().hex[:6]}",
        prefix=prefix,
    )
    running = Running(stage.tasks(), stage.shutdown).start()
    try:
        assert stage.source.wait_connected(10)
        publisher = threading.Thread(target=publish, args=(broker.url, prefix, count))
        publisher.start()
        rate = drain_rate(lambda: count_points(influx, "live"), count)
        publisher.join()
        return rate
    finally:
        running.stop()
        stage.close()


def main() -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--windows", default="20,100,1000", help="Receive Maximum values")
    parser.add_argument("--no-peer", action="store_true", help="skip Node-RED")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp, cpu_share_printed():
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto").start()
        influx = InfluxDB1(work / "influx").start()
        try:
            _measure(broker, influx, args.messages, args.windows, not args.no_peer, work)
        finally:
            influx.stop()
            broker.stop()


def _measure(
    broker: Mosquitto, influx: InfluxDB1, n: int, windows: str, with_peer: bool, work: Path
) -> None:
    print(f"messages: {n} (about {len(payload(0))} bytes each, {DEVICES} devices), QoS 1")
    load = publish_fast(broker.url, functools.partial(message, "nobody/hazardwatch/v1"), n)
    print(f"publisher pre-encoded QoS 1 packets, nobody subscribed: {load:>9,.0f} msg/s")
    paho_rate = raw_broker(broker, n)
    print(f"baseline  paho subscriber (auto-ack, json.loads): {paho_rate:>9,.0f} msg/s")
    client_id = f"bench-aio-{uuid.uuid4().hex[:6]}"
    queue_for(broker, client_id, f"aio-{client_id}/hazardwatch/v1", n)
    aio_rate = aiomqtt_drain(broker, client_id, n)
    print(f"baseline  aiomqtt subscriber (auto-ack, json.loads): {aio_rate:>8,.0f} msg/s")
    database_rate = raw_database(influx, n)
    print(f"baseline  InfluxDB /write, 5,000 points a batch: {database_rate:>10,.0f} points/s")
    peer_rate = None
    why_not = NodeRed.available() if with_peer else "--no-peer"
    if why_not is None:
        peer_rate = nodered(
            broker, influx, n, work / "nodered.log", lambda *a: publish(broker.url, *a)
        )
        print(f"peer      Node-RED, live publisher:        {peer_rate:>9,.0f} msg/s in InfluxDB")
    else:
        print(f"peer      Node-RED not measured: {why_not}")
    live = hazardwatch_live(broker, influx, n, work)
    vs_peer = f" ({live / peer_rate:.2f}x Node-RED)" if peer_rate else ""
    print(f"hazardwatch, live publisher:             {live:>9,.0f} msg/s in InfluxDB{vs_peer}")
    for window in (int(w) for w in windows.split(",")):
        durable, stored = hazardwatch(broker, influx, n, window, work)
        ratios = f"{stored / paho_rate:.2f} of paho"
        print(
            f"hazardwatch, Receive Maximum {window:>5}: {durable:>9,.0f} msg/s durable+acked, "
            f"{stored:>9,.0f} msg/s in InfluxDB ({ratios})"
        )


if __name__ == "__main__":
    main()

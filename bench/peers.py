"""Baselines measured beside hazardwatch: aiomqtt, and Node-RED, the peer a user would pick.

Every measurement here drains messages queued for a persistent session while the subscriber
was away, the same method as the hazardwatch figure, so the numbers compare.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.settings import parse_mqtt_url
from tests.servers import InfluxDB1, Mosquitto, free_port

PEER_DIR = Path(__file__).resolve().parents[2] / "shared" / "peers" / "nodered"
PEER_PREFIX = "hazardwatch/v1"  # the Node-RED flow subscribes to the contract's own topics
PROBE = 10**9  # the index of a message that no measured batch contains


def _session_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    return props


def aiomqtt_drain(broker: Mosquitto, client_id: str, count: int) -> float:
    """Drain rate of a bare aiomqtt subscriber (it acknowledges before the app sees a message)."""

    async def drain() -> float:
        endpoint = parse_mqtt_url(broker.url)
        start = time.perf_counter()
        async with aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=_session_properties(),
        ) as client:
            received = 0
            async for message in client.messages:
                json.loads(message.payload)
                received += 1
                if received == count:
                    break
        return count / (time.perf_counter() - start)

    return asyncio.run(drain())


def count_points(influx: InfluxDB1, db: str) -> int:
    """Points in `reading`, counted by InfluxDB itself."""
    body = influx.query('SELECT COUNT("seq") FROM "reading"', db=db)
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def drain_rate(count: Callable[[], int], total: int, timeout: float = 600) -> float:
    """Messages per second from the first stored point to the last one."""
    deadline = time.monotonic() + timeout
    while (first := count()) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("nothing arrived")
        time.sleep(0.01)
    start = time.perf_counter()
    while (done := count()) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {total} arrived")
        time.sleep(0.02)
    return (total - first) / (time.perf_counter() - start)


class NodeRed:
    """The peer's own `run.sh`, as a child process in its own process group."""

    def __init__(self, broker: Mosquitto, influx: InfluxDB1, db: str, log: Path) -> None:
        self._args = [str(broker.port), str(influx.port), db, "1", str(free_port())]
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """None when the peer can run here, else why not."""
        if not (PEER_DIR / "run.sh").exists():
            return f"{PEER_DIR}/run.sh not found"
        if shutil.which("node") is None or shutil.which("npm") is None:
            return "node and npm are not installed (apt-get install nodejs npm)"
        return None

    def start(self) -> None:
        """Start Node-RED (installing it from npm on first use)."""
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                ["bash", str(PEER_DIR / "run.sh"), *self._args],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Stop Node-RED and everything it started."""
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(30)
            self._process = None


def nodered(
    broker: Mosquitto,
    influx: InfluxDB1,
    count: int,
    log: Path,
    publish: Callable[[str, int, int], None],
) -> float:
    """Node-RED's rate into InfluxDB at QoS 1 while a publisher sends `count` messages.

    Live, not drained from a queued session: the flow's MQTT node does not resume a session
    across restarts here (seen: nothing queued was delivered), so it is measured as its
    README measures it, with the publisher running beside it on the same two cores.
    """
    db = "peer"
    influx.create_database(db)
    peer = NodeRed(broker, influx, db, log)
    peer.start()
    try:
        deadline = time.monotonic() + 300
        while count_points(influx, db) < 1:
            # Until Node-RED has subscribed, a probe reaches nobody: send it again.
            if time.monotonic() > deadline:
                raise TimeoutError(f"Node-RED stored nothing; see {log}")
            publish(PEER_PREFIX, 1, PROBE)
            time.sleep(2)
        publisher = threading.Thread(target=publish, args=(PEER_PREFIX, count, 0))
        publisher.start()
        rate = drain_rate(lambda: count_points(influx, db) - 1, count)
        publisher.join()
        return rate
    finally:
        peer.stop()

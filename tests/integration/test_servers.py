"""The server fixtures start real servers that behave like the production ones."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.servers import InfluxDB1, Mosquitto, MosquittoFactory, Postgres, require_binary

TIMEOUT = 5.0
NOT_AUTHORIZED = 135  # MQTT 5.0, 2.4 "Reason Code": 0x87


@dataclass
class Session:
    """A connected paho client, its CONNACK, and queues fed by its callbacks."""

    client: mqtt.Client
    reason_code: ReasonCode
    session_present: bool
    messages: queue.Queue[mqtt.MQTTMessage]
    acks: queue.Queue[list[ReasonCode]]  # SUBACK and PUBACK reason codes, in order

    def subscribe(self, topic: str) -> list[ReasonCode]:
        """Subscribe with QoS 1 and return the SUBACK reason codes."""
        self.client.subscribe(topic, qos=1)
        return self.acks.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes) -> list[ReasonCode]:
        """Publish with QoS 1 and return the PUBACK reason code."""
        self.client.publish(topic, payload, qos=1)
        return self.acks.get(timeout=TIMEOUT)


@contextmanager
def mqtt_session(
    broker: Mosquitto,
    client_id: str = "",
    *,
    session_expiry: int = 0,
    username: str | None = None,
    password: str | None = None,
) -> Iterator[Session]:
    """Connect an MQTT 5 client; ``session_expiry`` > 0 keeps the session after it leaves."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if username is not None:
        client.username_pw_set(username, password)
    messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    acks: queue.Queue[list[ReasonCode]] = queue.Queue()
    connack: list[tuple[ReasonCode, bool]] = []
    connected = threading.Event()

    def on_connect(_c: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        connack.append((rc, flags.session_present))
        connected.set()

    client.on_connect = on_connect
    client.on_message = lambda _c, _u, message: messages.put(message)
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: acks.put(codes)
    client.on_publish = lambda _c, _u, _mid, code, _p: acks.put([code])
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
    properties.SessionExpiryInterval = session_expiry
    client.connect("127.0.0.1", broker.port, clean_start=session_expiry == 0, properties=properties)
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT), "no CONNACK"
        reason_code, session_present = connack[0]
        yield Session(client, reason_code, session_present, messages, acks)
    finally:
        client.disconnect()
        client.loop_stop()


def test_qos1_message_goes_through_the_session_broker(
    mosquitto: Mosquitto, mqtt_topic_prefix: str
) -> None:
    topic = f"{mqtt_topic_prefix}/site-1/detector-7/reading"
    with mqtt_session(mosquitto) as sub, mqtt_session(mosquitto) as pub:
        assert [c.value for c in sub.subscribe(topic)] == [1]  # granted QoS 1
        assert [c.value for c in pub.publish(topic, b'{"ppm": 12}')] == [0]
        message = sub.messages.get(timeout=TIMEOUT)
    assert (message.topic, message.payload, message.qos) == (topic, b'{"ppm": 12}', 1)
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"


def test_message_for_an_offline_session_survives_a_broker_restart(
    mosquitto_factory: MosquittoFactory, mqtt_topic_prefix: str
) -> None:
    broker = mosquitto_factory()
    port, topic, client_id = broker.port, f"{mqtt_topic_prefix}/alarm", f"ingest-{uuid.uuid4()}"
    with mqtt_session(broker, client_id, session_expiry=3600) as sub:
        assert [c.value for c in sub.subscribe(topic)] == [1]
    with mqtt_session(broker) as pub:
        # 0, not 16 "No matching subscribers": the offline session holds the subscription.
        assert [c.value for c in pub.publish(topic, b"smoke")] == [0]

    broker.restart()

    assert broker.port == port
    assert (broker.workdir / "mosquitto.db").exists()
    with mqtt_session(broker, client_id, session_expiry=3600) as sub:
        assert sub.session_present
        message = sub.messages.get(timeout=TIMEOUT)
    assert (message.topic, message.payload, message.qos) == (topic, b"smoke", 1)


def test_broker_with_acl_refuses_what_the_acl_does_not_allow(
    mosquitto_factory: MosquittoFactory,
) -> None:
    acl = (
        "user detector\ntopic write sites/+/reading\ntopic read sites/+/command\n\n"
        "user console\ntopic read sites/+/reading\ntopic write sites/+/command\n"
    )
    broker = mosquitto_factory(users={"detector": "pw-d", "console": "pw-c"}, acl=acl)

    with mqtt_session(broker, username="detector", password="wrong") as refused:
        # Mosquitto 2.0.11 answers 0x87 "Not authorized", not 0x86 "Bad User Name or Password".
        assert refused.reason_code.value == NOT_AUTHORIZED
    with (
        mqtt_session(broker, username="detector", password="pw-d") as detector,
        mqtt_session(broker, username="console", password="pw-c") as console,
    ):
        # Mosquitto grants any subscription and checks read access on each delivery.
        assert [c.value for c in detector.subscribe("sites/#")] == [1]
        assert [c.value for c in console.subscribe("sites/#")] == [1]
        assert [c.value for c in detector.publish("sites/a/command", b"x")] == [NOT_AUTHORIZED]
        assert [c.value for c in detector.publish("sites/a/reading", b"12")] == [0]
        assert [c.value for c in console.publish("sites/a/command", b"test")] == [0]

        assert console.messages.get(timeout=TIMEOUT).topic == "sites/a/reading"
        # Its own reading would have come first, had the ACL let the detector read it.
        assert detector.messages.get(timeout=TIMEOUT).topic == "sites/a/command"


def test_influxdb_counts_a_point_written_twice_once(influxdb: InfluxDB1, influx_db: str) -> None:
    influxdb.write(
        influx_db,
        [
            "gas,device=d1 ppm=12 1700000000000",
            "gas,device=d2 ppm=30 1700000000000",
            "gas,device=d1 ppm=12 1700000000000",
        ],
    )

    assert influxdb.count("gas", influx_db) == 2
    assert influxdb.points("gas", influx_db) == [
        {"time": 1700000000000, "device": "d1", "ppm": 12},
        {"time": 1700000000000, "device": "d2", "ppm": 30},
    ]


def test_influxdb_keeps_written_points_after_a_crash(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_binary("influxd")
    server = InfluxDB1(tmp_path).start()
    request.addfinalizer(server.stop)
    server.create_database("crash")
    server.write("crash", "gas,device=d1 ppm=1 1700000000000\ngas,device=d1 ppm=2 1700000001000")

    server.kill()
    server.start()

    assert server.count("gas", "crash") == 2


def test_postgres_accepts_the_hazardwatch_user(postgres: Postgres) -> None:
    with psycopg.connect(postgres.dsn) as conn:
        row = conn.execute("select 1, current_user, current_database()").fetchone()
    assert row == (1, "hazardwatch", "hazardwatch")
    assert postgres.url.startswith("postgresql+psycopg://hazardwatch:")


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("", pytest.skip.Exception), ("1", pytest.fail.Exception)],
    ids=["local-skips", "ci-fails"],
)
def test_missing_binary_skips_locally_and_fails_on_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install mosquitto"):
        require_binary("/nonexistent/mosquitto")

"""The shipped broker configuration (deploy/mosquitto) enforced by a real Mosquitto.

Each test starts /usr/sbin/mosquitto with deploy/mosquitto/mosquitto.conf, `acl` and
`acl-service` as shipped. `shipped_config` rewrites only what cannot stay: the listener ports
(to free ones on 127.0.0.1), the paths under /mosquitto/ (to the test's dir) and, as root,
`user root`; it uncomments the TLS listener block for the TLS tests. Every other line reaches
the broker unchanged, and `shipped_config` fails on a listener or path it does not know, so a
change of the shipped security settings shows up here.

What Mosquitto 2.0.11 does, as these tests found it:

- A refused login (anonymous, wrong password, unknown user) gets CONNACK 0x87 "Not
  authorized" under MQTT 5 and return code 5 under MQTT 3.1.1.
- A PUBLISH the ACL denies is dropped; under MQTT 5 its PUBACK carries 0x87, under MQTT 3.1.1
  the PUBACK is an ordinary one. A denied last will is accepted in CONNECT and never published.
- A SUBSCRIBE is granted whatever the ACL says (SUBACK: the requested QoS); the read rules are
  applied on each delivery, retained messages included, so nothing is delivered.
- With `use_username_as_clientid true` the client id in CONNECT is replaced by the username,
  under MQTT 5 and 3.1.1, with or without clean start; the log names the replacement.
- TLS 1.3 with `require_certificate true`: a client without a certificate (or with one the CA
  did not sign) completes its side of the handshake and is then disconnected without CONNACK.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.outputs import CLIENT_ID as ALERTS_CLIENT_ID
from ingest.stage import CLIENT_ID as INGEST_CLIENT_ID
from tests.integration.mqtt_tools import wait_until
from tests.servers import HOST, ServerProcess, find_binary, free_port, require_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "mosquitto"
# The shipped listeners.
DEVICE_PORT, TLS_PORT, SERVICE_PORT, HEALTH_PORT = 1883, 8883, 1885, 1884
TLS_SECTION = "TLS device listener"
# The directives whose value is a path under /mosquitto/.
PATHS = ("password_file", "acl_file", "persistence_location", "certfile", "keyfile", "cafile")

HAZARDWATCH = "hazardwatch"
PASSWORDS = {"devA": "pw-a", "devB": "pw-b", HAZARDWATCH: "pw-hw", "simulator": "pw-sim"}
# `passwd` holds the devices; `passwd-service` hazardwatch and, as if carried over from a test
# bench, the simulator (which the production `acl-service` must then give nothing).
DEVICE_USERS = ("devA", "devB")
SERVICE_USERS = (HAZARDWATCH, "simulator")

INST = "inst-1"
TIMEOUT = 5.0
QUIET_S = 0.3  # after a sentinel arrived: time for a message that should not come
# MQTT 5.0 reason codes 0x00 and 0x87; paho reports MQTT 3.1.1's CONNACK return code 5
# ("not authorised") as 0x87 too.
SUCCESS, NOT_AUTHORIZED = 0, 135


def payload(n: int) -> bytes:
    """What `Client.publish_all` sends as its n-th message."""
    return f'{{"n": {n}}}'.encode()


def topic(device: str, channel: str = "telemetry", institution: str = INST) -> str:
    """A device topic of contract section 1."""
    return f"hazardwatch/v1/{institution}/{device}/{channel}"


# --- the shipped configuration, rewritten where it must be ------------------------------------


def with_tls(text: str) -> str:
    """The configuration with its TLS listener block uncommented: `#directive` lines become
    settings, `##` lines stay comments."""
    section, out = "", []
    for line in text.splitlines():
        if line.startswith("# --- "):  # a section's title line
            section = line.removeprefix("# --- ")
        tls = section.startswith(TLS_SECTION) and re.match(r"#[a-z]", line)
        out.append(line[1:] if tls else line)
    return "\n".join(out) + "\n"


def shipped_config(
    workdir: Path,
    ports: dict[int, int],
    *,
    tls: bool = False,
    require_certificate: bool | None = None,
) -> str:
    """The shipped mosquitto.conf with ports and paths moved into the test's world."""
    moves = {
        "/mosquitto/config/": f"{workdir}/",
        "/mosquitto/data/": f"{workdir}/data/",
        "/mosquitto/certs/": f"{workdir}/certs/",
    }
    text = (DEPLOY / "mosquitto.conf").read_text()
    out = []
    for raw in (with_tls(text) if tls else text).splitlines():
        line = raw
        if not line.strip() or line.startswith("#"):
            out.append(line)
            continue
        directive, *args = line.split()
        if directive == "listener":
            port, *bind = args
            assert int(port) in ports, f"a listener the test does not know: {line!r}"
            assert bind in ([], [HOST]), f"unexpected bind address: {line!r}"
            line = f"listener {ports[int(port)]} {HOST}"
        elif directive in PATHS:
            (path,) = args
            prefix = next((p for p in moves if path.startswith(p)), None)
            assert prefix is not None, f"a path the test does not know: {line!r}"
            line = f"{directive} {moves[prefix]}{path.removeprefix(prefix)}"
        elif directive == "require_certificate" and require_certificate is not None:
            line = f"require_certificate {str(require_certificate).lower()}"
        out.append(line)
    if os.geteuid() == 0:
        # As root, mosquitto 2 switches to user "mosquitto", who cannot read the test's files.
        out.append("user root")
    return "\n".join(out) + "\n"


def listener_settings(text: str) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
    """The global settings and each listener's, from a configuration's uncommented lines."""
    globals_: dict[str, str] = {}
    listeners: dict[int, dict[str, str]] = {}
    current = globals_
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        directive, _, value = line.partition(" ")
        if directive == "listener":
            current = listeners.setdefault(int(value.split()[0]), {"bind": value})
        elif directive not in ("log_type",):
            current[directive] = value
    return globals_, listeners


def rules(path: Path) -> list[str]:
    """An ACL file's rule lines, without comments and blank lines."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def write_passwd(path: Path, users: tuple[str, ...]) -> None:
    """A mosquitto password file with these users (mosquitto_passwd -b)."""
    passwd = require_binary("mosquitto_passwd")
    for i, user in enumerate(users):
        create = ["-c"] if i == 0 else []
        cmd = [passwd, *create, "-b", str(path), user, PASSWORDS[user]]
        subprocess.run(cmd, check=True, capture_output=True)


class ShippedBroker(ServerProcess):
    """Mosquitto with the shipped configuration; `port` is the device listener."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        tls: bool = False,
        require_certificate: bool | None = None,
        service_acl: Path = DEPLOY / "acl-service",
    ) -> None:
        super().__init__(workdir)
        self.binary = find_binary("mosquitto")
        self.ports = {
            DEVICE_PORT: self.port,
            SERVICE_PORT: free_port(),
            HEALTH_PORT: free_port(),
            TLS_PORT: free_port(),
        }
        (self.workdir / "data").mkdir(exist_ok=True)
        shutil.copyfile(DEPLOY / "acl", self.workdir / "acl")
        shutil.copyfile(service_acl, self.workdir / "acl-service")
        write_passwd(self.workdir / "passwd", DEVICE_USERS)
        write_passwd(self.workdir / "passwd-service", SERVICE_USERS)
        self.config_path = self.workdir / "mosquitto.conf"
        self.config = shipped_config(
            self.workdir, self.ports, tls=tls, require_certificate=require_certificate
        )
        self.config_path.write_text(self.config)

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    @property
    def service_port(self) -> int:
        """hazardwatch's listener."""
        return self.ports[SERVICE_PORT]

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its password files and ACLs again."""
        assert self._proc is not None, "not running"
        self._proc.send_signal(signal.SIGHUP)

    def log(self) -> str:
        """What the broker wrote (log_dest stderr ends up in the output file)."""
        return self.output_path.read_text(errors="replace")

    def client_ids_of(self, user: str) -> list[str]:
        """The client id of each connection the broker accepted from `user`, from its log."""
        pattern = rf"New client connected from \S+ as (\S+) \(.*u'{re.escape(user)}'\)"
        return re.findall(pattern, self.log())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    """The shipped production configuration, plain listeners only."""
    require_binary("mosquitto")
    server = ShippedBroker(tmp_path).start()
    yield server
    server.stop()


# --- clients ----------------------------------------------------------------------------------


class Client:
    """A paho client on its own thread that records what the broker answers."""

    def __init__(
        self,
        port: int,
        user: str | None = None,
        password: str | None = None,
        *,
        client_id: str = "",
        v5: bool = True,
        clean: bool = True,
        session_expiry: int = 0,
        will: tuple[str, bytes] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=None if v5 else clean,
            reconnect_on_failure=False,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.disconnects: list[ReasonCode] = []
        self.messages: list[tuple[str, bytes, bool]] = []
        self.pubacks: dict[int, int] = {}
        self.subacks: list[list[int]] = []
        self.error: type[Exception] | None = None  # what `connect` raised
        self._closed = False
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        kwargs: dict[str, Any] = {}
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session_expiry
            kwargs = {"clean_start": clean, "properties": properties}
        with warnings.catch_warnings():
            # paho leaves the socket of a failed TLS handshake to the garbage collector.
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                self.client.connect(HOST, port, keepalive=30, **kwargs)
            except (OSError, ssl.SSLError) as exc:  # e.g. a server certificate not trusted
                self.error = type(exc)
            gc.collect()
        if self.error is not None:
            return
        self.client.loop_start()
        wait_until(lambda: self.answered, TIMEOUT, "CONNACK or disconnection")

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        self.connack, self.session_present = rc, bool(flags.session_present)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.disconnects.append(rc)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self.pubacks[mid] = rc.value

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any) -> None:
        self.subacks.append([code.value for code in codes])

    @property
    def answered(self) -> bool:
        """CONNACK received, or the connection is gone."""
        return self.connack is not None or bool(self.disconnects)

    @property
    def connected(self) -> bool:
        """Accepted by the broker and still connected."""
        ok = self.connack is not None and not self.connack.is_failure
        return ok and not self.disconnects and self.client.is_connected()

    @property
    def refused(self) -> int | None:
        """The CONNACK's failure reason code, None if it was accepted or never came."""
        if self.connack is None or not self.connack.is_failure:
            return None
        return int(self.connack.value)

    def publish(self, to: str, body: bytes | str = b"{}", *, retain: bool = False) -> int:
        """Publish with QoS 1; the message id."""
        info = self.client.publish(to, body, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        return info.mid

    def publish_all(self, topics: list[str], *, retain: bool = False) -> dict[str, int]:
        """Publish `{"n": index}` to each topic, wait for every PUBACK; topic -> reason code."""
        mids = {self.publish(t, payload(i), retain=retain): t for i, t in enumerate(topics)}
        wait_until(lambda: set(mids) <= set(self.pubacks), TIMEOUT, "PUBACKs")
        return {mids[mid]: self.pubacks[mid] for mid in mids}

    def subscribe(self, *filters: str) -> list[int]:
        """Subscribe with QoS 1; the SUBACK's reason codes."""
        before = len(self.subacks)
        self.client.subscribe([(f, 1) for f in filters])
        wait_until(lambda: len(self.subacks) > before, TIMEOUT, "SUBACK")
        return self.subacks[before]

    def received(self, count: int) -> list[tuple[str, bytes, bool]]:
        """Wait until `count` messages came, then a moment longer for any extra; all of them."""
        wait_until(lambda: len(self.messages) >= count, TIMEOUT, f"{count} messages")
        time.sleep(QUIET_S)
        with self._lock:
            return list(self.messages)

    def topics(self) -> list[str]:
        """The topics of the messages so far."""
        with self._lock:
            return [m[0] for m in self.messages]

    def drop(self) -> None:
        """Break the connection without DISCONNECT, as a device that loses power: its will."""
        self._closed = True
        self.client.loop_stop()
        sock = self.client.socket()
        assert sock is not None
        sock.close()

    def close(self) -> None:
        """Disconnect and stop the thread."""
        if self.error is None and not self._closed:
            self._closed = True
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients to close after the test (append them)."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def connect(opened: list[Client], port: int, user: str | None = None, **kw: Any) -> Client:
    """A client with the test password of `user` (unless `password=` is given)."""
    password = kw.pop("password", PASSWORDS.get(user or ""))
    client = Client(port, user, password, **kw)
    opened.append(client)
    return client


def hazardwatch(opened: list[Client], broker: ShippedBroker, **kw: Any) -> Client:
    """hazardwatch's user on the service listener, subscribed to all device topics."""
    client = connect(opened, broker.service_port, HAZARDWATCH, **kw)
    assert client.connected, client.connack
    assert client.subscribe("hazardwatch/v1/#", "hazardwatch/alerts/#") == [1, 1]
    return client


# --- the configuration itself -----------------------------------------------------------------


def test_the_shipped_listeners_separate_devices_from_hazardwatch() -> None:
    text = (DEPLOY / "mosquitto.conf").read_text()
    settings, listeners = listener_settings(text)
    _, tls_listeners = listener_settings(with_tls(text))

    assert settings["per_listener_settings"] == "true"
    assert sorted(listeners) == [DEVICE_PORT, HEALTH_PORT, SERVICE_PORT]
    devices, tls = listeners[DEVICE_PORT], tls_listeners[TLS_PORT]
    for listener in (devices, tls):
        assert listener["allow_anonymous"] == "false"
        assert listener["use_username_as_clientid"] == "true"
        assert listener["password_file"] == "/mosquitto/config/passwd"
        assert listener["acl_file"] == "/mosquitto/config/acl"
    assert tls["require_certificate"] == "false"  # optional, documented in the block
    service = listeners[SERVICE_PORT]
    assert service["allow_anonymous"] == "false"
    assert service["password_file"] == "/mosquitto/config/passwd-service"
    assert service["acl_file"] == "/mosquitto/config/acl-service"
    health = listeners[HEALTH_PORT]
    assert health["bind"] == f"{HEALTH_PORT} 127.0.0.1" and "password_file" not in health
    # Per-client limits: queue (messages and bytes), packet size; the broker's heap.
    limits = ("max_queued_messages", "max_queued_bytes", "max_packet_size", "memory_limit")
    assert all(int(settings[name]) > 0 for name in limits)
    assert int(settings["max_queued_bytes"]) < int(settings["memory_limit"])
    # hazardwatch's two connections need distinct fixed ids, which the files name.
    assert INGEST_CLIENT_ID != ALERTS_CLIENT_ID
    for name in ("mosquitto.conf", "acl"):
        assert f"`{INGEST_CLIENT_ID}`" in (DEPLOY / name).read_text()
        assert f"`{ALERTS_CLIENT_ID}`" in (DEPLOY / name).read_text()


def test_the_simulator_is_only_in_the_demo_acl() -> None:
    production = rules(DEPLOY / "acl") + rules(DEPLOY / "acl-service")
    demo = rules(DEPLOY / "demo" / "acl-service")

    assert not [rule for rule in production if "simulator" in rule]
    assert "user simulator" in demo
    # The demo file is the production one plus the simulator, so benches test the real rules.
    assert demo[: demo.index("user simulator")] == rules(DEPLOY / "acl-service")


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_only_known_users_log_in_and_each_only_on_its_listener(
    broker: ShippedBroker, clients: list[Client], v5: bool
) -> None:
    refusals = {
        "anonymous on the device listener": connect(clients, broker.port, v5=v5),
        "anonymous on the service listener": connect(clients, broker.service_port, v5=v5),
        "wrong password": connect(clients, broker.port, "devA", password="pw-b", v5=v5),
        "hazardwatch on the device listener": connect(clients, broker.port, HAZARDWATCH, v5=v5),
        "a device on the service listener": connect(clients, broker.service_port, "devA", v5=v5),
        "simulator on the device listener": connect(clients, broker.port, "simulator", v5=v5),
        "wrong password for hazardwatch": connect(
            clients, broker.service_port, HAZARDWATCH, password="pw-a", v5=v5
        ),
    }
    accepted = {
        "a device on the device listener": connect(clients, broker.port, "devA", v5=v5),
        "hazardwatch on the service listener": connect(
            clients, broker.service_port, HAZARDWATCH, v5=v5
        ),
    }

    assert {name: c.refused for name, c in refusals.items()} == dict.fromkeys(
        refusals, NOT_AUTHORIZED
    )
    assert all(client.connected for client in accepted.values()), accepted
    assert "not authorised" in broker.log()


def test_the_health_check_listener_lets_anonymous_clients_read_the_uptime_only(
    broker: ShippedBroker, clients: list[Client]
) -> None:
    watcher = hazardwatch(clients, broker)
    probe = connect(clients, broker.ports[HEALTH_PORT])
    assert probe.connected

    assert probe.subscribe("$SYS/broker/uptime", "hazardwatch/#") == [1, 1]
    denied = probe.publish_all([topic("devA"), "hazardwatch/alerts/inst-1/a-1"])
    device = connect(clients, broker.port, "devA")
    device.publish_all([topic("devA")])  # the sentinel, for both subscribers

    assert denied == dict.fromkeys(denied, NOT_AUTHORIZED)
    assert watcher.received(1) == [(topic("devA"), payload(0), False)]
    # $SYS topics are retained: the uptime comes at once, and nothing else.
    assert {t for t, _, _ in probe.received(1)} == {"$SYS/broker/uptime"}


# --- what a device may publish and read -------------------------------------------------------


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_a_device_publishes_only_its_own_three_channels(
    broker: ShippedBroker, clients: list[Client], v5: bool
) -> None:
    watcher = hazardwatch(clients, broker)
    device = connect(clients, broker.port, "devA", v5=v5)
    allowed = [topic("devA", c) for c in ("telemetry", "event", "status")]
    allowed.append(topic("devA", institution="inst-2"))  # the ACL cannot bind the institution
    denied = [
        topic("devB"),
        topic("devB", "event"),
        topic("devB", "status"),
        topic("devA", "foo"),
        topic("devA", "telemetry") + "/extra",
        f"hazardwatch/v1/{INST}/devA",
        f"hazardwatch/v1/{INST}/devAx/telemetry",
        "hazardwatch/alerts/inst-1/a-1",
        "hazardwatch/v1/devA/telemetry",
        "elsewhere/devA",
    ]

    # Retained, so that a late subscriber shows what the broker kept, too.
    acks = device.publish_all(denied + allowed, retain=True)
    # devB's status as devA's last will: accepted in CONNECT, dropped when the connection breaks.
    liar = connect(clients, broker.port, "devA", v5=v5, will=(topic("devB", "status"), b"lie"))
    assert liar.connected
    liar.drop()
    honest = connect(clients, broker.port, "devB", v5=v5, will=(topic("devB", "status"), b"x"))
    assert honest.connected
    honest.drop()  # devB's own will: published, and the sentinel of what came before

    got = watcher.received(len(allowed) + 1)
    assert [(t, p) for t, p, _ in got] == [
        *((t, payload(len(denied) + i)) for i, t in enumerate(allowed)),
        (topic("devB", "status"), b"x"),
    ]
    expected_denied = NOT_AUTHORIZED if v5 else SUCCESS  # MQTT 3.1.1 has no reason codes
    assert {t: acks[t] for t in denied} == dict.fromkeys(denied, expected_denied)
    assert {t: acks[t] for t in allowed} == dict.fromkeys(allowed, SUCCESS)
    # A new subscriber gets the retained messages: those of devA's allowed topics and devB's
    # will, nothing that was denied.
    late = hazardwatch(clients, broker)
    assert sorted(late.received(len(allowed) + 1)) == sorted(
        [
            *((t, payload(len(denied) + i), True) for i, t in enumerate(allowed)),
            (topic("devB", "status"), b"x", True),
        ]
    )


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_a_device_reads_nothing(broker: ShippedBroker, clients: list[Client], v5: bool) -> None:
    watcher = hazardwatch(clients, broker)
    alerts = connect(clients, broker.service_port, HAZARDWATCH, client_id=ALERTS_CLIENT_ID)
    assert alerts.publish_all(["hazardwatch/alerts/inst-1/a-1"]) == {
        "hazardwatch/alerts/inst-1/a-1": SUCCESS
    }
    # A shared subscription, for several ingest workers (docs/deployment.md, "Scaling out").
    worker = connect(clients, broker.service_port, HAZARDWATCH)
    assert worker.subscribe("$share/ingest/hazardwatch/v1/#") == [1]
    other = connect(clients, broker.port, "devB")
    other.publish_all([topic("devB", "status")], retain=True)
    reader = connect(clients, broker.port, "devA", v5=v5)

    filters = ["#", "hazardwatch/v1/#", "hazardwatch/alerts/#", topic("devB"), topic("devA")]
    # Granted: mosquitto 2.0.11 does not check an acl_file's read rules on SUBSCRIBE ...
    assert reader.subscribe(*filters) == [1] * len(filters)
    sent = [topic("devB"), topic("devB", "event"), topic("devB", "status")]
    other.publish_all(sent)
    reader.publish_all([topic("devA")])
    alerts.publish_all(["hazardwatch/alerts/inst-1/a-2"])

    # ... but on each delivery: hazardwatch gets all of it, the device nothing, not even its
    # own message or the retained ones.
    expected = [
        "hazardwatch/alerts/inst-1/a-1",
        topic("devB", "status"),
        *sent,
        topic("devA"),
        "hazardwatch/alerts/inst-1/a-2",
    ]
    assert [t for t, _, _ in watcher.received(len(expected))] == expected
    assert worker.topics() == [topic("devB", "status"), *sent, topic("devA")]
    assert reader.messages == []
    assert reader.connected


# --- hazardwatch's client ids -----------------------------------------------------------------


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_a_device_cannot_take_hazardwatchs_client_ids(
    broker: ShippedBroker, clients: list[Client], v5: bool
) -> None:
    edge = {"client_id": INGEST_CLIENT_ID, "clean": False, "session_expiry": 3600}
    # The receive edge's persistent session: subscribed, then away (a restart of hazardwatch).
    first = hazardwatch(clients, broker, **edge)
    first.close()
    devb = connect(clients, broker.port, "devB")
    queued = [topic("devB"), topic("devB", "event"), topic("devB")]
    assert devb.publish_all(queued) == dict.fromkeys(queued, SUCCESS)

    # Device A tries hazardwatch's ids with a clean start, which would end the session and
    # drop its queue, had the broker let it have the id.
    for client_id in (INGEST_CLIENT_ID, ALERTS_CLIENT_ID):
        impostor = connect(clients, broker.port, "devA", client_id=client_id, v5=v5, clean=True)
        assert impostor.connected  # a device may connect so ...
        impostor.close()
    # ... not on hazardwatch's listener, where client ids are free, nor with a wrong password.
    assert connect(clients, broker.service_port, "devA", **edge).refused == NOT_AUTHORIZED
    wrong = connect(clients, broker.service_port, HAZARDWATCH, password="pw-a", **edge)
    assert wrong.refused == NOT_AUTHORIZED

    edge_back = connect(clients, broker.service_port, HAZARDWATCH, **edge)
    assert edge_back.connected and edge_back.session_present
    got = edge_back.received(len(queued))
    assert [(t, p) for t, p, _ in got] == [(t, payload(i)) for i, t in enumerate(queued)]

    # Both of hazardwatch's connections are up; device A tries again with each id.
    alerts = connect(clients, broker.service_port, HAZARDWATCH, client_id=ALERTS_CLIENT_ID)
    assert alerts.connected
    for client_id in (INGEST_CLIENT_ID, ALERTS_CLIENT_ID):
        impostor = connect(clients, broker.port, "devA", client_id=client_id, v5=v5)
        assert impostor.connected
    devb.publish_all([topic("devB", "status")])
    assert [t for t, _, _ in edge_back.received(len(queued) + 1)][-1] == topic("devB", "status")
    assert alerts.publish_all(["hazardwatch/alerts/inst-1/a-1"]) == {
        "hazardwatch/alerts/inst-1/a-1": SUCCESS
    }
    assert edge_back.connected and alerts.connected
    assert edge_back.disconnects == [] and alerts.disconnects == []
    # The broker replaced the id device A sent with its username, every time.
    assert broker.client_ids_of("devA") == ["devA"] * 4
    assert set(broker.client_ids_of(HAZARDWATCH)) == {INGEST_CLIENT_ID, ALERTS_CLIENT_ID}


def test_a_changed_or_removed_password_ends_the_devices_connection_on_sighup(
    broker: ShippedBroker, clients: list[Client]
) -> None:
    edge = {"client_id": INGEST_CLIENT_ID, "clean": False, "session_expiry": 3600}
    watcher = hazardwatch(clients, broker, **edge)
    changed = connect(clients, broker.port, "devA")
    removed = connect(clients, broker.port, "devB", v5=False)
    passwd, path = find_binary("mosquitto_passwd"), str(broker.workdir / "passwd")
    subprocess.run([passwd, "-b", path, "devA", "pw-a-2"], check=True, capture_output=True)
    subprocess.run([passwd, "-D", path, "devB"], check=True, capture_output=True)

    broker.reload()

    # Unlike what mosquitto.conf(5) of 2.0.11 says ("clients that are already connected will
    # not be affected"), the broker checks connected clients against the new file.
    wait_until(lambda: bool(changed.disconnects and removed.disconnects), TIMEOUT, "reload")
    assert connect(clients, broker.port, "devA").refused == NOT_AUTHORIZED
    assert connect(clients, broker.port, "devB").refused == NOT_AUTHORIZED
    renewed = connect(clients, broker.port, "devA", password="pw-a-2")
    assert renewed.publish_all([topic("devA")]) == {topic("devA"): SUCCESS}
    assert watcher.received(1) == [(topic("devA"), payload(0), False)]
    assert watcher.connected and watcher.disconnects == []  # its password did not change


# --- the simulator ----------------------------------------------------------------------------


def test_the_simulator_gets_nothing_in_production(
    broker: ShippedBroker, clients: list[Client]
) -> None:
    watcher = hazardwatch(clients, broker)
    # In `passwd-service` here, as if carried over from a test bench: it logs in ...
    simulator = connect(clients, broker.service_port, "simulator")
    assert simulator.connected
    targets = [topic("devA"), topic("devB", "event"), topic("devB", "status")]
    targets.append("hazardwatch/alerts/inst-1/a-1")

    # ... and may do nothing: production's acl-service has no rule for it.
    assert simulator.publish_all(targets) == dict.fromkeys(targets, NOT_AUTHORIZED)
    assert simulator.subscribe("#") == [1]
    connect(clients, broker.port, "devA").publish_all([topic("devA", "event")])

    assert watcher.received(1) == [(topic("devA", "event"), payload(0), False)]
    assert simulator.messages == []


def test_the_simulator_publishes_as_any_device_with_the_demo_acl(
    tmp_path: Path, clients: list[Client]
) -> None:
    require_binary("mosquitto")
    broker = ShippedBroker(tmp_path, service_acl=DEPLOY / "demo" / "acl-service").start()
    try:
        watcher = hazardwatch(clients, broker)
        # `hazardwatch simulate` as a test bench runs it: one connection per device, each
        # with the device id as client id, all with the one `simulator` user.
        url = f"mqtt://simulator:{PASSWORDS['simulator']}@{HOST}:{broker.service_port}"
        command = [sys.executable, "-m", "simulators", "--broker", url, "--institutions", "1"]
        command += ["--devices", "3", "--count", "6", "--rate", "50", "--processes", "1"]
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        summary = done.stdout.strip().splitlines()[-1]
        sent = sum(int(n) for n in re.findall(r"(?:telemetry|event|status)=(\d+)", summary))
        assert sent >= 6 and f"acked={sent} " in summary, summary

        got = watcher.received(sent)
        assert len(got) == sent
        assert len({t.split("/")[3] for t, _, _ in got}) == 3  # the devices
        assert len(set(broker.client_ids_of("simulator"))) == 3
    finally:
        broker.stop()


# --- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate from it, and client certificates from it and another CA."""

    dir: Path

    def __getitem__(self, name: str) -> str:
        return str(self.dir / name)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=hazardwatch test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def _issue(name: str, ca: str, extensions: str, cwd: Path) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=cwd,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Made with the openssl CLI, as docs/security.md describes."""
    require_binary("openssl")
    cwd = tmp_path_factory.mktemp("certs")
    _make_ca("ca", cwd)
    _make_ca("other-ca", cwd)
    server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    _issue("server", "ca", server, cwd)
    _issue("devA", "ca", "extendedKeyUsage=clientAuth\n", cwd)
    _issue("devA-other", "other-ca", "extendedKeyUsage=clientAuth\n", cwd)
    return Certificates(cwd)


def tls_broker(
    workdir: Path, certs: Certificates, require_certificate: bool | None
) -> ShippedBroker:
    """The shipped configuration with its TLS block enabled and the test's certificates."""
    (workdir / "certs").mkdir(parents=True)
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copyfile(certs[name], workdir / "certs" / name)
    return ShippedBroker(workdir, tls=True, require_certificate=require_certificate)


def context(certs: Certificates, client: str | None = None) -> ssl.SSLContext:
    """A client TLS context that trusts the test CA, with a client certificate if named."""
    ctx = ssl.create_default_context(cafile=certs["ca.crt"])
    if client is not None:
        ctx.load_cert_chain(certs[f"{client}.crt"], certs[f"{client}.key"])
    return ctx


def test_tls_listener_with_a_custom_ca(
    tmp_path: Path,
    certificates: Certificates,
    clients: list[Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_binary("mosquitto")
    broker = tls_broker(tmp_path, certificates, require_certificate=None).start()
    try:
        assert "require_certificate false" in broker.config  # as shipped
        port = broker.ports[TLS_PORT]
        watcher = hazardwatch(clients, broker, client_id=INGEST_CLIENT_ID)

        trusted = connect(clients, port, "devA", tls=context(certificates))
        untrusted = connect(clients, port, "devA", tls=ssl.create_default_context())
        wrong = connect(clients, port, "devA", password="pw-b", tls=context(certificates))
        # hazardwatch and the simulators use the default context: SSL_CERT_FILE adds the CA.
        monkeypatch.setenv("SSL_CERT_FILE", certificates["ca.crt"])
        default = connect(clients, port, "devB", tls=ssl.create_default_context())
        impostor = connect(
            clients, port, "devA", client_id=INGEST_CLIENT_ID, tls=context(certificates)
        )

        assert untrusted.error is ssl.SSLCertVerificationError
        assert wrong.refused == NOT_AUTHORIZED
        assert default.connected and impostor.connected
        # The impostor was device A again, so it replaced device A's first connection.
        wait_until(lambda: bool(trusted.disconnects), TIMEOUT, "device A's first connection")
        assert impostor.publish_all([topic("devA")]) == {topic("devA"): SUCCESS}
        assert default.publish_all([topic("devA"), topic("devB")]) == {
            topic("devA"): NOT_AUTHORIZED,
            topic("devB"): SUCCESS,
        }
        assert [t for t, _, _ in watcher.received(2)] == [topic("devA"), topic("devB")]
        assert watcher.connected and watcher.disconnects == []
        assert broker.client_ids_of("devA") == ["devA", "devA"]
    finally:
        broker.stop()


def test_tls_listener_requiring_client_certificates(
    tmp_path: Path, certificates: Certificates, clients: list[Client]
) -> None:
    require_binary("mosquitto")
    broker = tls_broker(tmp_path, certificates, require_certificate=True).start()
    try:
        port = broker.ports[TLS_PORT]
        watcher = hazardwatch(clients, broker)

        without = connect(clients, port, "devA", tls=context(certificates))
        foreign = connect(clients, port, "devA", tls=context(certificates, "devA-other"))
        wrong = connect(clients, port, "devA", password="pw-b", tls=context(certificates, "devA"))
        signed = connect(clients, port, "devA", tls=context(certificates, "devA"))

        for refused in (without, foreign):
            # TLS 1.3: the client's side of the handshake completes, then the broker hangs up.
            assert refused.connack is None and (refused.error or refused.disconnects)
        assert "peer did not return a certificate" in broker.log()
        assert "certificate verify failed" in broker.log()  # the certificate of another CA
        assert wrong.refused == NOT_AUTHORIZED  # a certificate does not replace the password
        assert signed.connected
        assert signed.publish_all([topic("devA")]) == {topic("devA"): SUCCESS}
        assert [t for t, _, _ in watcher.received(1)] == [topic("devA")]
    finally:
        broker.stop()

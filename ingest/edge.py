"""The receive edge: a process of its own that takes MQTT messages and makes them durable.

It does one thing per message: append the raw message to the raw spool. Every group of
messages is written with one fdatasync, and only then is each message acknowledged (PUBACK,
MQTT 5.0 section 4.3.2: the receiver owns a message once it has acknowledged it). Parsing,
validation and storage happen in the service process, which reads the raw spool.

Why a process, and why one thread: paho-mqtt spends most of a core on its own packet handling
in Python. Every piece of work that shares its interpreter, and every hand-off to another
thread (the GIL changing hands for each message), came straight off the receive rate
(measured: 8,200 msg/s with parsing and a commit thread in one process, 16,500 with only a
commit thread, 26,000 with the commit done inline in paho's own loop, against 24,000 for a
bare paho subscriber that acknowledges at once). So the network loop here is driven by hand,
and the group commit runs between two turns of it.

Talks to its parent over its standard streams: a JSON configuration line on stdin, and
status lines on stdout (`lsn N K`: records up to LSN N are durable, the last group was K;
`up` / `down`: the broker connection; `fault REASON`: a group could not be made durable, so
it was not acknowledged).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import ssl
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.journal import Journal
from core.logs import setup_logging
from core.models import MAX_PAYLOAD_BYTES
from core.retry import Backoff

log = logging.getLogger("ingest.edge")

# The broker keeps our subscriptions and undelivered QoS 1 messages this long while we are
# away (MQTT 5.0 section 3.1.2.11.2): a week covers any planned maintenance window.
SESSION_EXPIRY_S = 7 * 24 * 3600
KEEPALIVE_S = 30
# How many unacknowledged QoS 1 messages the broker may send us at once (MQTT 5.0 section
# 3.1.2.11.3, Receive Maximum). We acknowledge only after fdatasync, so a wider window keeps
# the pipe full while a group commits. An MQTT 3.1.1 session gets the broker's own limit
# (Mosquitto: max_inflight_messages, 20 unless configured).
RECEIVE_MAXIMUM = 1000
MQTT311_WINDOW = 20
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
# A group is written when it has this many records, when the broker cannot send more (the
# in-flight window is full), when the socket has gone quiet, or after LINGER_S at the latest.
GROUP_RECORDS = 500
LINGER_S = 0.005
IDLE_S = 0.25
PR_SET_PDEATHSIG = 1

# received at (ms since the epoch), flags, length of the topic in bytes; then topic, payload
RAW_HEADER = struct.Struct("<QBH")
RETAINED, DUP, TRUNCATED = 1, 2, 4
# A truncated payload is preceded by its full size.
RAW_SIZE = struct.Struct("<I")
# Payloads over the contract's 16 KiB are dead letters anyway: only their start is kept, one
# byte over the limit so that the parser refuses them, and their size. A broker lets through
# up to 256 MiB unless told otherwise; none of it needs to reach the disk.
MAX_RAW_PAYLOAD = MAX_PAYLOAD_BYTES + 1


# A raw record decoded: received at (ms), retained, dup, topic, payload, and the size the
# payload arrived with when only its start was kept (-1: kept whole). A plain tuple: it is
# made for every message, and a named one costs a tenth of the digester's time.
RawRecord = tuple[int, bool, bool, bytes, bytes, int]


def encode_raw(
    received_ms: int, retained: bool, dup: bool, topic: bytes, payload: bytes | bytearray
) -> bytes:
    """A raw spool record: the message as it arrived (the start of an oversized one), and when."""
    flags = (RETAINED if retained else 0) | (DUP if dup else 0)
    if len(payload) > MAX_RAW_PAYLOAD:
        header = RAW_HEADER.pack(received_ms, flags | TRUNCATED, len(topic))
        return b"".join((header, topic, RAW_SIZE.pack(len(payload)), payload[:MAX_RAW_PAYLOAD]))
    return b"".join((RAW_HEADER.pack(received_ms, flags, len(topic)), topic, payload))


def decode_raw(body: bytes) -> RawRecord:
    """The inverse of `encode_raw`."""
    received_ms, flags, topic_len = RAW_HEADER.unpack_from(body)
    end = RAW_HEADER.size + topic_len
    topic = body[RAW_HEADER.size : end]
    retained, dup = bool(flags & RETAINED), bool(flags & DUP)
    if flags & TRUNCATED:
        (size,) = RAW_SIZE.unpack_from(body, end)
        return received_ms, retained, dup, topic, body[end + RAW_SIZE.size :], size
    return received_ms, retained, dup, topic, body[end:], -1


class _BufferedSocket:
    """A socket whose reads come from one large `recv`, for paho's many small ones.

    paho reads a packet in three or more `recv` calls (type byte, length bytes one at a time,
    body) and selects before each packet: five system calls for a 150-byte message. Reading
    64 KiB at once and serving the small reads from memory leaves one call per many messages.
    paho asks `pending()` before it selects (as it does for TLS) and does not wait while
    bytes are buffered. Everything else goes to the socket itself.
    """

    READ = 64 * 1024

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._buffer):
            data = self._sock.recv(max(size, self.READ))
            if len(data) <= size:
                return bytes(data)
            self._buffer, self._pos = data, 0
        start = self._pos
        self._pos = min(len(self._buffer), start + size)
        return self._buffer[start : self._pos]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Client(mqtt.Client):
    """paho's client reading through `_BufferedSocket`."""

    def _create_socket(self) -> Any:
        return _BufferedSocket(super()._create_socket())


@dataclass
class EdgeConfig:
    """What the edge process is told at start (on stdin: the password stays out of `ps`)."""

    host: str
    port: int
    client_id: str
    topics: list[str]
    spool_dir: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    mqtt5: bool = True
    receive_maximum: int | None = RECEIVE_MAXIMUM
    group_records: int = GROUP_RECORDS
    linger_s: float = LINGER_S
    log_level: str = "INFO"
    spool_max_bytes: int | None = None
    parent_pid: int = field(default_factory=os.getpid)

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> EdgeConfig:
        """The inverse of `to_json`."""
        return cls(**json.loads(line))

    @property
    def window(self) -> int:
        """How many unacknowledged messages the broker sends before it waits for us."""
        if self.mqtt5 and self.receive_maximum is not None:
            return self.receive_maximum
        return MQTT311_WINDOW


class Edge:
    """The single-threaded receive loop: read packets, group-commit, acknowledge."""

    def __init__(self, config: EdgeConfig, status: int = 1) -> None:
        self.config = config
        self._status = status
        self._spool = Journal(
            Path(config.spool_dir), track_lag=False, max_bytes=config.spool_max_bytes
        )
        self._records: list[bytes] = []
        self._mids: list[int] = []
        self._first_at = 0.0
        self._limit = max(1, min(config.group_records, config.window))
        self._stopping = False
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        config = self.config
        protocol = MQTTProtocolVersion.MQTTv5 if config.mqtt5 else MQTTProtocolVersion.MQTTv311
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=None if config.mqtt5 else False,
            protocol=protocol,
            manual_ack=True,
        )
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    def stop(self, *_: Any) -> None:
        """Finish the group in hand, disconnect and return from `run` (a signal handler)."""
        self._stopping = True

    def run(self) -> None:
        """Receive until stopped; reconnect with exponential back-off when the broker goes."""
        self._say(f"lsn {self._spool.committed_lsn} 0")
        properties = None
        if self.config.mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            if self.config.receive_maximum is not None:
                properties.ReceiveMaximum = self.config.receive_maximum
        client = self._client
        client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=KEEPALIVE_S,
            clean_start=False,
            properties=properties,
        )
        backoff, connected = Backoff(first=RECONNECT_MIN_S, most=RECONNECT_MAX_S), False
        while not self._stopping and self._parent_alive():
            if not connected:
                try:
                    client.reconnect()
                    connected = True
                except OSError as exc:
                    log.warning("broker %s:%d: %s", self.config.host, self.config.port, exc)
                    self._sleep(backoff.next())
                    continue
            before = len(self._records)
            rc = client.loop(timeout=self._timeout())
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._buffered() and not self._due():
                rc = client.loop_read()  # packets already in memory: no select needed
            if self._due(quiet=len(self._records) == before):
                self._commit()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                connected = False
                self._lost(rc)
                self._sleep(backoff.next())
            elif client.is_connected():
                backoff.reset()
        self._commit()
        if connected:
            client.disconnect()
            client.loop(timeout=0.1)
        self._spool.close()
        log.info("edge stopped at LSN %d", self._spool.committed_lsn)

    def _buffered(self) -> bool:
        sock = self._client.socket()
        return isinstance(sock, _BufferedSocket) and sock.pending() > 0

    def _full(self) -> bool:
        return len(self._records) >= self._limit

    def _timeout(self) -> float:
        if not self._records:
            return IDLE_S
        return max(0.0, self._first_at + self.config.linger_s - time.monotonic())

    def _due(self, *, quiet: bool = False) -> bool:
        if not self._records:
            return False
        return quiet or self._full() or time.monotonic() - self._first_at >= self.config.linger_s

    def _commit(self) -> None:
        """Make the group durable, then acknowledge it."""
        if not self._records:
            return
        records, mids = self._records, self._mids
        self._records, self._mids = [], []
        try:
            lsn = self._spool.append(records)
        except OSError as exc:
            # Nothing is acknowledged; the broker sends it all again on the next connection,
            # after a back-off (run's reconnect), so a full disk is not a busy loop.
            log.error("cannot write the raw spool: %s; dropping the connection", exc)
            self._say(f"fault {exc}".replace("\n", " "))
            self._client.disconnect()
            return
        for mid in mids:
            self._client.ack(mid, 1)
        self._say(f"lsn {lsn} {len(records)}")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self._records:
            self._first_at = time.monotonic()
        self._records.append(
            encode_raw(
                time.time_ns() // 1_000_000,
                bool(message.retain),
                bool(message.dup),
                bytes(message._topic),
                message.payload,
            )
        )
        if message.qos:
            self._mids.append(message.mid)

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker %s:%d refused us: %s", self.config.host, self.config.port, reason)
            return
        topics = self.config.topics
        if self.config.mqtt5:
            # Retained status messages only on a new subscription, not on every reconnect
            # (MQTT 5.0 section 3.8.3.1, Retain Handling 1).
            options = SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            )
            client.subscribe([(topic, options) for topic in topics])
        else:
            client.subscribe([(topic, 1) for topic in topics])
        log.info(
            "connected to %s:%d (session present: %s)",
            self.config.host,
            self.config.port,
            flags.session_present,
        )
        self._say("up")

    def _lost(self, rc: MQTTErrorCode) -> None:
        """The connection is gone: keep what arrived, but its packet ids died with it."""
        self._mids.clear()  # the broker sends these again on the next connection
        self._commit()
        self._say("down")
        log.warning(
            "lost the broker %s:%d: %s", self.config.host, self.config.port, mqtt.error_string(rc)
        )

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and self._parent_alive() and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def _parent_alive(self) -> bool:
        return os.getppid() == self.config.parent_pid

    def _say(self, line: str) -> None:
        os.write(self._status, (line + "\n").encode())


def _die_with_parent() -> None:
    """Linux: be killed when the parent dies, even by SIGKILL (prctl(2), PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):  # elsewhere the loop checks getppid()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> None:
    """Entry point of the child process: `python -m ingest.edge` with the config on stdin."""
    _die_with_parent()
    config = EdgeConfig.from_json(sys.stdin.readline())
    if os.getppid() != config.parent_pid:
        sys.exit(1)
    setup_logging(config.log_level)
    edge = Edge(config)
    signal.signal(signal.SIGTERM, edge.stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    edge.run()


if __name__ == "__main__":
    main()

"""A paho-mqtt client driven by the asyncio loop, built for many QoS 1 publishes per second.

aiomqtt awaits one PUBACK per `publish` call (an `asyncio.Event`, a `wait_for` and a scan of
all pending calls each time), which tops out near 4,700 msg/s here. This connection hands each
message to paho without waiting and counts PUBACKs in `on_publish`; a window of unacknowledged
messages gives back-pressure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import ConfigError
from core.retry import Backoff
from simulators.payloads import Outgoing

log = logging.getLogger("hazardwatch.simulators.mqtt")

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """Where the broker is: `mqtt://user:pass@host:port` or `mqtts://…`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Parse a broker URL; raise ConfigError on anything else."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ConfigError(f"broker URL {url!r} is not mqtt://host[:port] or mqtts://…")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: {exc}") from None
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port, username, password, parts.scheme == "mqtts")

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Will:
    """The last will the broker publishes when the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class ConnectError(Exception):
    """The broker could not be reached or refused the connection."""

    def __init__(self, client_id: str, reason: str) -> None:
        super().__init__(f"{client_id}: {reason}")
        self.client_id = client_id
        self.reason = reason


def _consume_outcome(future: asyncio.Future[MQTTErrorCode]) -> None:
    # An abandoned attempt's error was already reported as a timeout; do not log it again.
    if not future.cancelled():
        future.exception()


class Connection:
    """One MQTT connection; `publish` never waits for the broker."""

    def __init__(
        self,
        broker: BrokerURL,
        client_id: str,
        *,
        will: Will | None = None,
        window: int = 1000,
        keepalive: int = 30,
        timeout: float = 10.0,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.window = window
        self.published = 0
        self.acked = 0
        self.on_connected: Callable[[Connection], None] | None = None
        self._keepalive = keepalive
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected = False
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._connecting: asyncio.Future[MQTTErrorCode] | None = None
        self._lost = asyncio.Event()
        self._closing = asyncio.Event()
        self._window_open = asyncio.Event()
        self._acked_all = asyncio.Event()
        self._awake = asyncio.Event()
        self._awake.set()
        self._jitter = random.Random()
        self._client = self._make_client(will)

    def _make_client(self, will: Will | None) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        # No paho in-flight limit: its queue is rescanned on every PUBACK (O(n) per message);
        # our own window bounds what is outstanding instead.
        client.max_inflight_messages_set(0)
        client.connect_timeout = self._timeout
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    @property
    def connected(self) -> bool:
        """True between CONNACK and the loss of the connection."""
        return self._connected

    @property
    def inflight(self) -> int:
        """Messages handed to paho that the broker has not acknowledged yet."""
        return self.published - self.acked

    def publish(self, message: Outgoing, qos: int) -> bool:
        """Hand one message to paho; False (and nothing sent) when not connected."""
        if not self._connected:
            return False
        info = self._client.publish(message.topic, message.payload, qos, message.retain)
        # NO_CONN still queues a QoS 1 message: paho sends it again after reconnecting.
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            qos and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            self.published += 1
            return True
        log.warning(
            "publish refused client=%s topic=%s rc=%s", self.client_id, message.topic, info.rc
        )
        return False

    async def wait_window(self) -> None:
        """Wait while the window of unacknowledged messages is full (or the link is down)."""
        while self.inflight >= self.window and self._connected and not self._closing.is_set():
            self._window_open.clear()
            try:
                await asyncio.wait_for(self._window_open.wait(), 1.0)
            except TimeoutError:
                continue

    async def drain(self, seconds: float) -> bool:
        """Wait until every message is acknowledged; False if time ran out."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.inflight > 0 and self._connected:
                    self._acked_all.clear()
                    await self._acked_all.wait()
        return self.inflight <= 0

    def close(self) -> None:
        """Ask `run` to disconnect cleanly (no last will) and return."""
        self._closing.set()
        self._window_open.set()

    def suspend(self) -> None:
        """Drop the link without DISCONNECT, so the broker publishes the will; stay down."""
        self._awake.clear()
        if self._connected:
            self._drop()

    def resume(self) -> None:
        """Reconnect after `suspend`."""
        self._awake.set()

    async def run(self) -> None:
        """Connect, and reconnect with back-off whenever the link drops, until `close`."""
        backoff = Backoff(first=0.5, most=30.0, rng=self._jitter)
        while not self._closing.is_set():
            if not self._awake.is_set():
                await self._wait_any(self._awake, self._closing, seconds=60.0)
                continue
            try:
                await self._connect()
            except (ConnectError, OSError, TimeoutError) as exc:
                delay = backoff.next()
                log.warning(
                    "connect failed client=%s broker=%s: %s; retry in %.1fs",
                    self.client_id,
                    self.broker,
                    exc,
                    delay,
                )
                await self._pause(delay)
                continue
            backoff.reset()
            if self.on_connected is not None:
                self.on_connected(self)
            await self._stay_connected()
            if self._awake.is_set() and not self._closing.is_set():
                log.warning("connection lost client=%s broker=%s", self.client_id, self.broker)
                await self._pause(Backoff(first=0.5, rng=self._jitter).next())
        await self._disconnect()

    async def _connect(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            raise ConnectError(self.client_id, "the previous attempt is still resolving the host")
        self._lost.clear()
        self._connack = self._loop.create_future()
        # connect() resolves the name, opens the socket and does TLS: blocking, so in a thread.
        # A thread cannot be cancelled: on timeout it is left to finish, and waited for above.
        self._connecting = asyncio.ensure_future(
            asyncio.to_thread(
                self._client.connect, self.broker.host, self.broker.port, self._keepalive
            )
        )
        self._connecting.add_done_callback(_consume_outcome)
        await asyncio.wait_for(asyncio.shield(self._connecting), self._timeout + 1.0)
        try:
            reason = await asyncio.wait_for(asyncio.shield(self._connack), self._timeout)
        except TimeoutError:
            self._force_close()
            raise ConnectError(self.client_id, "no CONNACK") from None
        if reason.is_failure:
            self._force_close()
            raise ConnectError(self.client_id, f"refused: {reason}")
        self._connected = True

    async def _stay_connected(self) -> None:
        """Run paho's housekeeping (keep-alive pings, retries) once a second until the link ends."""
        while not self._lost.is_set() and not self._closing.is_set():
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            await self._wait_any(self._lost, self._closing, seconds=1.0)

    async def _disconnect(self) -> None:
        if self._connected:
            self._client.disconnect()
            await self._wait_any(self._lost, seconds=2.0)
        self._connected = False
        self._force_close()

    async def _pause(self, seconds: float) -> None:
        await self._wait_any(self._closing, seconds=seconds)

    @staticmethod
    async def _wait_any(*events: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _force_close(self) -> None:
        sock = self._client.socket()
        if sock is not None and sock.fileno() >= 0:
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            sock.close()

    # ---------------------------------------------------------------- paho callbacks

    def _in_loop(self, fn: Callable[..., object], *args: Any) -> None:
        # paho calls the socket callbacks from the connect() thread too.
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self._in_loop(self._resolve_connack, reason)

    def _resolve_connack(self, reason: ReasonCode) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: object, _r: object, _p: object
    ) -> None:
        self._connected = False
        self._in_loop(self._wake_all)

    def _wake_all(self) -> None:
        self._lost.set()
        self._window_open.set()
        self._acked_all.set()

    def _on_publish(self, _c: paho.Client, _u: object, _mid: int, _r: object, _p: object) -> None:
        self.acked += 1
        outstanding = self.published - self.acked
        if outstanding < self.window // 2:
            self._window_open.set()
        if outstanding <= 0:
            self._acked_all.set()

    # The socket callbacks pass file descriptors: from the connect() thread, the socket may be
    # closed by the time the loop runs the call.
    def _on_socket_open(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._loop.add_reader, sock.fileno(), self._read)

    def _on_socket_close(self, _c: paho.Client, _u: object, sock: Any) -> None:
        if (fd := sock.fileno()) >= 0:
            self._in_loop(self._loop.remove_reader, fd)

    def _on_register_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(self._loop.add_writer, sock.fileno(), self._write)

    def _on_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        if (fd := sock.fileno()) >= 0:
            self._in_loop(self._loop.remove_writer, fd)

    def _read(self) -> None:
        client = self._client
        try:
            client.loop_read()
            # An SSL socket can hold decoded bytes that select() does not see (paho issue 131).
            sock = client.socket()
            while isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
                client.loop_read()
        except Exception:  # a broken socket must end this link, never the event loop
            log.exception("read failed client=%s broker=%s", self.client_id, self.broker)
            self._drop()

    def _write(self) -> None:
        try:
            self._client.loop_write()
        except Exception:  # as in _read
            log.exception("write failed client=%s broker=%s", self.client_id, self.broker)
            self._drop()

    def _drop(self) -> None:
        self._connected = False
        self._force_close()
        self._wake_all()

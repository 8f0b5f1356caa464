"""Small MQTT and waiting helpers shared by integration tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.settings import parse_mqtt_url


def wait_until(
    condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll until `condition()` holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Publisher:
    """A QoS 1 publisher that knows when the broker has taken every message."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        endpoint = parse_mqtt_url(url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if endpoint.username:
            secret = endpoint.password.get_secret_value() if endpoint.password else None
            self._client.username_pw_set(endpoint.username, secret)
        self._client.max_queued_messages_set(0)
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self.sent = 0
        self.acked = 0
        self._client.on_publish = self._on_publish
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()

    def _on_publish(self, *_args: Any) -> None:
        # Once per message: paho forgets a message at its first PUBACK, even one sent twice.
        self.acked += 1

    def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], retain: bool = False
    ) -> None:
        """Publish with QoS 1."""
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        # Packet ids wrap at 65,535 (MQTT 5.0 section 2.2.1): paho refuses one still in flight,
        # and this waits for it to be free instead.
        while self._client.publish(topic, payload, qos=1, retain=retain).rc == (
            mqtt.MQTT_ERR_QUEUE_SIZE
        ):
            time.sleep(0.005)
        self.sent += 1

    def wait_all_acked(self, timeout: float = 30.0) -> None:
        """Block until the broker has acknowledged every publish."""
        wait_until(lambda: self.acked >= self.sent, timeout, "broker PUBACKs")

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()
        # The callback refers back to us: without it the client is no longer in a cycle and
        # closes its sockets when dropped, not whenever the collector finds it.
        self._client.on_publish = None


class Stream:
    """A thread that publishes `total` messages at about `rate` per second, through outages.

    paho keeps unacknowledged QoS 1 messages and sends them again after a reconnect (with the
    DUP flag), so a broker restart delays the stream but loses nothing from it.
    """

    def __init__(
        self,
        url: str,
        message: Callable[[int], tuple[str, dict[str, Any]]],
        total: int,
        rate: float,
    ) -> None:
        self._publisher = Publisher(url)
        self._message = message
        self.total = total
        self._interval = 1.0 / rate
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="test-stream", daemon=True)

    def start(self) -> Stream:
        """Begin publishing."""
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.total):
            delay = started + i * self._interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._publisher.publish(*self._message(i))
            self.sent = i + 1

    def wait_sent(self, count: int, timeout: float = 60.0) -> None:
        """Block until `count` messages have been handed to the client."""
        wait_until(lambda: self.sent >= count, timeout, f"{count} messages sent")

    def finish(self, timeout: float = 120.0) -> None:
        """Wait until every message is published and acknowledged by the broker, then close."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not finish"
        self._publisher.wait_all_acked(timeout)
        self._publisher.close()

"""Small MQTT and waiting helpers shared by integration tests."""

from __future__ import annotations

import json
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
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        self.sent = 0

    def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], retain: bool = False
    ) -> None:
        """Publish with QoS 1."""
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self._infos.append(self._client.publish(topic, payload, qos=1, retain=retain))
        self.sent += 1

    def wait_all_acked(self, timeout: float = 30.0) -> None:
        """Block until the broker has acknowledged every publish."""
        wait_until(
            lambda: all(info.is_published() for info in self._infos), timeout, "broker PUBACKs"
        )
        self._infos.clear()

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

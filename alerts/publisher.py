"""Publishes alert changes on MQTT (contract section 1, "Published by hazardwatch")."""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from core.settings import MqttEndpoint

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0


class AlertPublisher:
    """A paho client of its own (not the ingest session), QoS 1, retained while open."""

    def __init__(
        self, endpoint: MqttEndpoint, client_id: str = "hazardwatch-alerts", *, mqtt5: bool = True
    ) -> None:
        protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        if endpoint.username:
            password = endpoint.password.get_secret_value() if endpoint.password else None
            self._client.username_pw_set(endpoint.username, password)
        if endpoint.tls:
            self._client.tls_set_context(ssl.create_default_context())
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._endpoint = endpoint
        self.connected = threading.Event()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if not reason.is_failure:
            self.connected.set()
        else:
            log.error("alert publisher: broker refused the connection: %s", reason)

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself."""
        self._client.on_disconnect = lambda *_args: self.connected.clear()
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()

    def publish(self, payload: dict[str, Any]) -> None:
        """Publish one outbox payload (`topic`, `body`); raise if the broker did not take it."""
        body = payload["body"]
        data = orjson.dumps(body) if body else b""  # empty retained payload: the alert is gone
        if not self.connected.wait(PUBLISH_TIMEOUT_S):
            raise ConnectionError("not connected to the broker")
        info = self._client.publish(payload["topic"], data, qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish refused: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        if not info.is_published():
            raise TimeoutError("the broker did not acknowledge the publish")

    def stop(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

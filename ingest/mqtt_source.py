"""The MQTT subscription: QoS 1, fixed client id, persistent session, late acknowledgement."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.settings import MqttEndpoint
from ingest.committer import Ack
from ingest.messages import RawMessage

log = logging.getLogger(__name__)

Handler = Callable[[RawMessage, Ack | None], None]

# The broker keeps our subscriptions and undelivered QoS 1 messages this long while we are
# away (MQTT 5.0 section 3.1.2.11.2): a week covers any planned maintenance window.
SESSION_EXPIRY_S = 7 * 24 * 3600
KEEPALIVE_S = 30
# How many unacknowledged QoS 1 messages the broker may send us at once (MQTT 5.0 section
# 3.1.2.11.3, Receive Maximum). We acknowledge only after fdatasync, so a wider window keeps
# the pipe full while a group commits; Mosquitto otherwise uses max_inflight_messages (20).
# The pending records it allows are the only unbounded-looking queue in ingest.
RECEIVE_MAXIMUM = 1000
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


class MqttSource:
    """Runs paho-mqtt's network loop in its own thread and hands each message on.

    paho-mqtt 2 with `manual_ack=True` lets us send PUBACK after the message is durable;
    aiomqtt 2 acknowledges before the application sees a message, so it is not used here.
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        topics: list[str],
        handler: Handler,
        mqtt5: bool = True,
        receive_maximum: int | None = RECEIVE_MAXIMUM,
    ) -> None:
        self.endpoint = endpoint
        self.topics = topics
        self.connected = threading.Event()
        self._handler = handler
        self._mqtt5 = mqtt5
        self._receive_maximum = receive_maximum
        self._generation = 0
        self._client = self._make_client(client_id)

    def _make_client(self, client_id: str) -> mqtt.Client:
        protocol = MQTTProtocolVersion.MQTTv5 if self._mqtt5 else MQTTProtocolVersion.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self._mqtt5 else False,
            protocol=protocol,
            manual_ack=True,
        )
        if self.endpoint.username:
            password = self.endpoint.password.get_secret_value() if self.endpoint.password else None
            client.username_pw_set(self.endpoint.username, password)
        if self.endpoint.tls:
            client.tls_set_context(ssl.create_default_context())
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect in the background; paho reconnects with back-off on its own."""
        properties = None
        if self._mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            if self._receive_maximum is not None:
                properties.ReceiveMaximum = self._receive_maximum
        self._client.connect_async(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=KEEPALIVE_S,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; the session (and unacknowledged messages) stay with the broker."""
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed, or the timeout passes."""
        return self.connected.wait(timeout)

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker %s:%d refused us: %s", self.endpoint.host, self.endpoint.port, reason)
            return
        self._generation += 1
        if self._mqtt5:
            # Retained status messages only on a new subscription, not on every reconnect
            # (MQTT 5.0 section 3.8.3.1, Retain Handling 1).
            options = SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            )
            client.subscribe([(topic, options) for topic in self.topics])
        else:
            client.subscribe([(topic, 1) for topic in self.topics])
        log.info(
            "connected to %s:%d (session present: %s)",
            self.endpoint.host,
            self.endpoint.port,
            flags.session_present,
        )
        self.connected.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.connected.clear()
        log.warning("disconnected from %s:%d: %s", self.endpoint.host, self.endpoint.port, reason)

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = bytes(message._topic).decode("utf-8", "replace")
        raw = RawMessage(
            topic=topic,
            payload=bytes(message.payload),
            received_at=datetime.now(UTC),
            retained=bool(message.retain),
            dup=bool(message.dup),
        )
        ack = self._ack_for(client, message.mid, message.qos) if message.qos else None
        self._handler(raw, ack)

    def _ack_for(self, client: mqtt.Client, mid: int, qos: int) -> Ack:
        generation = self._generation

        def ack() -> None:
            # A packet id belongs to one connection: after a reconnect the broker sends the
            # message again and that copy is the one to acknowledge.
            if generation == self._generation:
                client.ack(mid, qos)

        return ack

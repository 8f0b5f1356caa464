"""The outputs of alert changes, each a consumer of the event log with its own checkpoint.

MQTT (retained, contract section 1), InfluxDB `alert` points (contract section 2) and each
webhook (generic JSON, WeCom, DingTalk; alert and ticket changes alike) read the log in order
and deliver each event at least once: a failing output retries its event with back-off and
holds back only itself. Nothing here needs the SQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import aiomqtt
import httpx
import orjson

from alerts.events import alert_changes, from_event
from alerts.notices import NoticeContext
from alerts.notify import (
    InstitutionLookup,
    Message,
    alert_message,
    alert_point,
    mqtt_publication,
    render,
    ticket_message,
    wants,
)
from core.consumers import Checkpointed
from core.errors import HazardwatchError
from core.eventlog import ALERT, TICKET, FileCheckpoints, LogEvent
from core.points import SeriesStamper
from core.ports import EventLog, TimeSeriesSink
from core.settings import MqttEndpoint, Webhook

log = logging.getLogger(__name__)

# Sent with every webhook delivery: the event's position in the log, the same on a retry, so
# a receiver can drop a repeat (delivery is at least once: a crash after sending, before the
# checkpoint, sends again).
DELIVERY_HEADER = "X-Hazardwatch-Delivery"
WEBHOOK_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 10.0
# The alert publisher's client id: fixed, and distinct from the receive edge's
# (ingest.stage.CLIENT_ID), since a broker lets one connection hold a client id at a time.
CLIENT_ID = "hazardwatch-alerts"


class WebhookError(HazardwatchError):
    """The receiver did not take the notification."""


class WebhookOutput(Checkpointed):
    """Delivers the changes one webhook should hear of, in order."""

    def __init__(
        self,
        hook: Webhook,
        http: httpx.Client,
        institutions: InstitutionLookup,
        events: EventLog,
        checkpoints: FileCheckpoints,
        context: NoticeContext | None = None,
    ) -> None:
        super().__init__(events, checkpoints)
        self.name = f"webhook:{hook.name}"
        self.hook = hook
        self._http = http
        self._institutions = institutions
        self._context = context or NoticeContext()
        self.delivered = 0

    def handle(self, events: Sequence[LogEvent]) -> None:
        """Send each event meant for this webhook; checkpoint what was done, also on failure.

        The position is saved after each delivery: a crash repeats at most the one delivery
        in flight (with the same delivery id).
        """
        done = self.position
        try:
            for event in events:
                message = self._message(event)
                if message is not None and wants(self.hook, message):
                    self.send(event.position, message.body)
                    self.delivered += 1
                    self._save(event.position)
                done = event.position
        finally:
            self._save(done)

    def _message(self, event: LogEvent) -> Message | None:
        if event.kind == ALERT:
            return alert_message(from_event(event)[1], self._institutions)
        if event.kind == TICKET:
            return ticket_message(event.body(), self._institutions)
        return None

    def send(self, delivery: int, body: dict[str, Any]) -> None:
        """One delivery; raises WebhookError or httpx.HTTPError when not taken."""
        url, payload = render(self.hook, body, context=self._context)
        headers = {DELIVERY_HEADER: str(delivery)}
        response = self._http.post(url, json=payload, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
        if response.status_code >= 300:
            raise WebhookError(f"HTTP {response.status_code}: {response.text[:200]}")
        if self.hook.format != "generic":
            # WeCom and DingTalk answer 200 with {"errcode": N}; only 0 is success.
            errcode = response.json().get("errcode", 0)
            if errcode != 0:
                raise WebhookError(f"errcode {errcode}: {response.text[:200]}")


class InfluxAlertOutput(Checkpointed):
    """Writes an `alert` point for every change but repeats, a batch a request."""

    name = "influx-alerts"

    def __init__(self, sink: TimeSeriesSink, events: EventLog, checkpoints: FileCheckpoints):
        super().__init__(events, checkpoints)
        self._sink = sink
        self._stamper = SeriesStamper()

    def handle(self, events: Sequence[LogEvent]) -> None:
        """Write the batch's points; the same point written twice is one point."""
        points = [
            point
            for _, (_, change) in alert_changes(events)
            if (point := alert_point(change)) is not None
        ]
        if points:
            self._stamper.batch(points, self._sink.write)
        self._save(events[-1].position)


class MqttOutput(Checkpointed):
    """Publishes each alert change, retained while the alert is open (contract section 1)."""

    name = "mqtt"

    def __init__(
        self,
        endpoint: MqttEndpoint,
        events: EventLog,
        checkpoints: FileCheckpoints,
        *,
        client_id: str = CLIENT_ID,
        mqtt5: bool = True,
    ) -> None:
        super().__init__(events, checkpoints)
        self._endpoint = endpoint
        self._client_id = client_id
        self._mqtt5 = mqtt5
        self._session: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None

    async def handle(self, events: Sequence[LogEvent]) -> None:
        """Publish with QoS 1, each acknowledged before the next; reconnect after a failure."""
        done = self.position
        try:
            client = await self._connected()
            for event, (_, change) in alert_changes(events):
                publication = mqtt_publication(change)
                if publication is not None:
                    topic, body = publication
                    payload = orjson.dumps(body) if body else b""  # empty: the alert is gone
                    await client.publish(
                        topic, payload, qos=1, retain=True, timeout=PUBLISH_TIMEOUT_S
                    )
                done = event.position
            done = events[-1].position
        except aiomqtt.MqttError:
            await self.close()
            raise
        finally:
            await asyncio.to_thread(self._save, done)  # a file written and synced: off the loop

    async def _connected(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        endpoint = self._endpoint
        password = endpoint.password.get_secret_value() if endpoint.password else None
        client = aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if self._mqtt5 else aiomqtt.ProtocolVersion.V311,
            tls_context=ssl.create_default_context() if endpoint.tls else None,
            timeout=PUBLISH_TIMEOUT_S,
            logger=log,
        )
        session = contextlib.AsyncExitStack()
        await session.enter_async_context(client)
        self._session, self._client = session, client
        return client

    async def close(self) -> None:
        """Disconnect (at shutdown, or to reconnect after a failure)."""
        session, self._session, self._client = self._session, None, None
        if session is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await session.aclose()

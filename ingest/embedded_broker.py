"""An MQTT broker inside the process (amqtt), for the zero-set-up default.

It speaks MQTT 3.1.1 and keeps sessions in memory only: right for a demo or a trial on one
machine. Production uses Mosquitto or EMQX (see docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.broker import Broker

from core.settings import MqttEndpoint

log = logging.getLogger(__name__)

PLUGINS = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}


class EmbeddedBroker:
    """amqtt on the service's event loop (a demo's load is small)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def endpoint(self) -> MqttEndpoint:
        """Where clients connect."""
        return MqttEndpoint(host=self.host, port=self.port, tls=False)

    @property
    def url(self) -> str:
        """The broker as an MQTT URL."""
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen; raise OSError when the port is taken."""
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": PLUGINS,
        }
        self._broker = Broker(config, loop=asyncio.get_running_loop())
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self, within_s: float = 10.0) -> None:
        """Close every connection."""
        if self._broker is None:
            return
        try:
            await asyncio.wait_for(self._broker.shutdown(), within_s)
        except Exception:  # shutting down anyway
            log.warning("embedded broker did not shut down cleanly", exc_info=True)
        self._broker = None

"""An MQTT broker inside the process (amqtt), for the zero-set-up default.

It speaks MQTT 3.1.1 and keeps sessions in memory only: right for a demo or a trial on one
machine. Production uses Mosquitto or EMQX (see docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future

from amqtt.broker import Broker

from core.settings import MqttEndpoint

log = logging.getLogger(__name__)

PLUGINS = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}


class EmbeddedBroker:
    """amqtt on its own event loop in a thread, so it never competes with ours for time."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="embedded-broker", daemon=True
        )
        self._broker: Broker | None = None

    @property
    def endpoint(self) -> MqttEndpoint:
        """Where clients connect."""
        return MqttEndpoint(host=self.host, port=self.port, tls=False)

    @property
    def url(self) -> str:
        """The broker as an MQTT URL."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Listen; raise OSError when the port is taken."""
        self._thread.start()
        future: Future[None] = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout)
        log.info("embedded MQTT broker listening on %s", self.url)

    async def _start(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": PLUGINS,
        }
        self._broker = Broker(config, loop=asyncio.get_running_loop())
        await self._broker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop the thread."""
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout)
            except Exception:  # shutting down anyway
                log.warning("embedded broker did not shut down cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

"""A stage's tasks run from synchronous code (tests, benchmarks): the same supervisor as the
service, on an event loop in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from core.health import Health, TaskSpec
from hazardwatch.supervisor import Supervisor


class Running:
    """Start with `start()`, end with `stop()`; `health` shows what the tasks report."""

    def __init__(
        self,
        specs: list[TaskSpec],
        shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.health = Health()
        self._specs = specs
        self._shutdown = shutdown
        self._loop = asyncio.new_event_loop()
        self._until: asyncio.Event | None = None
        self._supervisor: Supervisor
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="running-tasks", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Running:
        """Run the tasks until `stop`."""
        self._thread.start()
        assert self._started.wait(10), "the tasks did not start"
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._supervise())
        except BaseException as exc:
            self.error = exc
        finally:
            self._loop.close()

    async def _supervise(self) -> None:
        supervisor = self._supervisor = Supervisor(self.health, CollectorRegistry())
        for spec in self._specs:
            supervisor.add(spec.name, spec.body, fatal=spec.fatal, **spec.options())
        self._until = asyncio.Event()
        self._started.set()
        await supervisor.run(self._until)

    def call(self, make: Callable[[], Awaitable[object]], timeout: float = 60) -> object:
        """Run a coroutine on the tasks' loop and wait for its result."""

        async def wrapped() -> object:
            return await make()

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout)

    @property
    def running(self) -> bool:
        """True until `stop` (or a task failed for good)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 60) -> None:
        """Shut down in order (if given how), then cancel every task."""
        if not self._thread.is_alive():
            return
        self._supervisor.stopping = True  # the tasks end as the stages drain
        if self._shutdown is not None:
            self.call(self._shutdown, timeout)
        until = self._until
        assert until is not None
        self._loop.call_soon_threadsafe(until.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the tasks did not stop"

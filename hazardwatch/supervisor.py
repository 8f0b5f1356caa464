"""One owner for every loop of the service: named tasks under one asyncio TaskGroup.

A task that crashes is logged at ERROR with its traceback, counted
(`hazardwatch_task_crashes_total{task}`), shown as failed in `/readyz`, and started again
after a back-off — unless it is marked `fatal` (its state cannot be trusted after a crash,
as the digester's), or it keeps crashing: then the whole service stops with an error, and
systemd or compose starts it again from its spools and checkpoints, which are built for that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from core.health import Component, Health
from core.retry import Backoff

log = logging.getLogger(__name__)

TaskBody = Callable[[Component], Coroutine[Any, Any, None]]

CRASH_WINDOW_S = 600.0
CRASHES_ALLOWED = 5  # in the window; one more and the service stops
HEALTHY_AFTER_S = 60.0  # a task that ran this long starts its back-off from the beginning


class TaskFailedError(RuntimeError):
    """A task crashed for good: the service stops (and is started again from outside)."""


@dataclass
class _Task:
    name: str
    body: TaskBody
    component: Component
    fatal: bool
    crashes: deque[float] = field(default_factory=deque)


class Supervisor:
    """Starts, watches and restarts the service's tasks."""

    def __init__(
        self,
        health: Health,
        registry: CollectorRegistry,
        *,
        restart_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.health = health
        self._restart_s = restart_s
        self._tasks: dict[str, _Task] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self.stopping = False  # set while the service drains: a task may then end by itself
        self._crashes = Counter(
            "hazardwatch_task_crashes", "tasks that crashed", ["task"], registry=registry
        )

    def add(self, name: str, body: TaskBody, *, fatal: bool = False, **report: Any) -> Component:
        """A task to run for as long as the service runs; `report`: its Component's options."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} is there already")
        component = self.health.component(name, **report)
        self._tasks[name] = _Task(name, body, component, fatal)
        self._crashes.labels(name)
        return component

    async def run(self, until: asyncio.Event) -> None:
        """Run every task until `until` is set (then cancel them), or one fails for good:
        then TaskFailedError, after every other task was cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for task in self._tasks.values():
                    self._running[task.name] = group.create_task(self._keep(task), name=task.name)
                await until.wait()
                self.stopping = True
                for running in self._running.values():
                    running.cancel()
        except* TaskFailedError as failed:
            raise failed.exceptions[0] from None

    def stop(self, name: str) -> None:
        """Cancel one task (shutdown, in order)."""
        running = self._running.get(name)
        if running is not None:
            running.cancel()

    async def _keep(self, task: _Task) -> None:
        backoff = Backoff(*self._restart_s)
        while True:
            started = time.monotonic()
            try:
                await task.body(task.component)
                if self.stopping:
                    return
                raise RuntimeError("the task returned; it should run until cancelled")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it was, it is reported and handled
                if time.monotonic() - started > HEALTHY_AFTER_S:
                    backoff.reset()
                self._crashed(task, exc)
            await asyncio.sleep(backoff.next())
            log.warning("task %s: starting it again", task.name)

    def _crashed(self, task: _Task, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("task %s crashed: %s", task.name, reason, exc_info=exc)
        task.component.crash(reason)
        self._crashes.labels(task.name).inc()
        now = time.monotonic()
        task.crashes.append(now)
        while task.crashes and task.crashes[0] < now - CRASH_WINDOW_S:
            task.crashes.popleft()
        if task.fatal or len(task.crashes) > CRASHES_ALLOWED:
            why = "it cannot be restarted safely" if task.fatal else "it keeps crashing"
            log.critical("task %s crashed and %s: stopping the service", task.name, why)
            raise TaskFailedError(f"task {task.name} failed: {reason}") from exc

"""The supervisor: crashed tasks are reported and started again, or stop the service."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from core.health import Component, Health, State
from hazardwatch import supervisor as supervisor_module
from hazardwatch.supervisor import Supervisor, TaskFailedError

QUICK = (0.001, 0.002)  # restart back-off for the tests


def crashes(registry: CollectorRegistry, task: str) -> float:
    return registry.get_sample_value("hazardwatch_task_crashes_total", {"task": task}) or 0.0


async def test_a_crashed_task_is_reported_counted_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health, registry = Health(), CollectorRegistry()
    supervisor = Supervisor(health, registry, restart_s=QUICK)
    runs: list[int] = []
    until = asyncio.Event()

    async def flaky(component: Component) -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise ConnectionError(f"attempt {len(runs)}")
        component.progress()
        until.set()
        await asyncio.Event().wait()

    supervisor.add("flaky", flaky)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(supervisor.run(until), 5)
    assert len(runs) == 3
    assert crashes(registry, "flaky") == 2
    component = health.get("flaky")
    assert component is not None and component.crashes == 2
    assert component.state()[0] is State.OK, "recovered"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and errors[0].exc_info is not None, "with the traceback"
    assert "task flaky crashed: ConnectionError: attempt 1" in errors[0].getMessage()


async def test_a_fatal_task_stops_the_service_and_the_others_are_cancelled() -> None:
    supervisor = Supervisor(Health(), CollectorRegistry(), restart_s=QUICK)
    cancelled = asyncio.Event()

    async def quiet(component: Component) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def digester(component: Component) -> None:
        await asyncio.sleep(0)
        raise ValueError("bad state")

    supervisor.add("quiet", quiet)
    supervisor.add("digester", digester, fatal=True)
    with pytest.raises(TaskFailedError, match="task digester failed: ValueError: bad state"):
        await asyncio.wait_for(supervisor.run(asyncio.Event()), 5)
    assert cancelled.is_set()


async def test_a_task_that_keeps_crashing_stops_the_service() -> None:
    registry = CollectorRegistry()
    supervisor = Supervisor(Health(), registry, restart_s=QUICK)

    async def broken(component: Component) -> None:
        raise RuntimeError("always")

    supervisor.add("broken", broken)
    with pytest.raises(TaskFailedError, match="broken"):
        await asyncio.wait_for(supervisor.run(asyncio.Event()), 5)
    assert crashes(registry, "broken") == supervisor_module.CRASHES_ALLOWED + 1


async def test_a_task_that_returns_while_the_service_runs_has_failed() -> None:
    supervisor = Supervisor(Health(), CollectorRegistry(), restart_s=QUICK)
    supervisor.add("returns", lambda _c: asyncio.sleep(0), fatal=True)
    with pytest.raises(TaskFailedError, match="returns failed: RuntimeError: the task returned"):
        await asyncio.wait_for(supervisor.run(asyncio.Event()), 5)


async def test_a_task_may_end_by_itself_while_the_service_drains() -> None:
    health = Health()
    supervisor = Supervisor(health, CollectorRegistry(), restart_s=QUICK)
    until, drain = asyncio.Event(), asyncio.Event()
    ended: list[str] = []

    async def drains(component: Component) -> None:
        await drain.wait()
        ended.append("drained")

    supervisor.add("drains", drains, fatal=True)
    running = asyncio.create_task(supervisor.run(until))
    await asyncio.sleep(0.01)
    supervisor.stopping = True  # as the shutdown does before it drains
    drain.set()
    await asyncio.sleep(0.01)
    assert ended == ["drained"] and not running.done(), "ended quietly, the rest runs on"
    component = health.get("drains")
    assert component is not None and component.crashes == 0
    until.set()
    await asyncio.wait_for(running, 5)
    with pytest.raises(ValueError, match="already"):
        supervisor.add("drains", drains)

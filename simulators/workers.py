"""Spread a fleet over worker processes when one Python process cannot keep the rate.

Each worker runs every n-th device of the same deterministic fleet with its share of the rate,
the count and the connections, and sends its RunStats back through a pipe. Scenario methods
(`Simulation.fleet.device(...).start_alarm()`) reach only an in-process run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection as Pipe
from multiprocessing.context import SpawnProcess
from typing import Any

from simulators.fleet import Simulation
from simulators.plan import RunStats, SimOptions

log = logging.getLogger("hazardwatch.simulators.workers")

_EXIT_GRACE_S = 15.0  # a worker drains and says `offline` for its devices before it exits


def _worker_main(options: SimOptions, pipe: Pipe) -> None:
    """Entry point of a worker process (spawned, so it must be importable)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        pipe.send(asyncio.run(_run_worker(options)))
    finally:
        pipe.close()


async def _run_worker(options: SimOptions) -> RunStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await Simulation(options).run(stop)


def _receive(pipe: Pipe) -> RunStats | None:
    """The stats a worker sends when it ends; None if it died first."""
    try:
        stats = pipe.recv()
    except EOFError:
        return None
    finally:
        pipe.close()
    return stats if isinstance(stats, RunStats) else None


async def run_workers(shares: list[SimOptions], stop: asyncio.Event) -> RunStats:
    """Run one process per share until they finish or `stop` is set; their stats, added up."""
    # spawn, not fork: the parent has an event loop and threads that a fork would copy.
    context = multiprocessing.get_context("spawn")
    processes: list[SpawnProcess] = []
    receivers: list[asyncio.Task[RunStats | None]] = []
    for index, share in enumerate(shares):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main, args=(share, sender), name=f"hwsim-worker-{index}", daemon=True
        )
        process.start()
        sender.close()
        processes.append(process)
        receivers.append(asyncio.create_task(asyncio.to_thread(_receive, receiver)))
    try:
        await _wait_or_stop(receivers, processes, stop)
    finally:
        for process in processes:
            await asyncio.to_thread(process.join, 1.0)
            if process.is_alive():
                process.kill()
    results = [_result(task) for task in receivers]
    if lost := results.count(None):
        log.warning("%d worker process(es) ended without reporting", lost)
    rate = shares[0].rate if shares else 0.0
    return RunStats.merge(rate, [stats for stats in results if stats is not None])


def _result(task: asyncio.Task[RunStats | None]) -> RunStats | None:
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


async def _wait_or_stop(
    receivers: list[asyncio.Task[RunStats | None]],
    processes: list[SpawnProcess],
    stop: asyncio.Event,
) -> None:
    """Wait for every worker's report; on `stop`, ask them to end and give them time to."""
    stopping = asyncio.create_task(stop.wait())
    reports = asyncio.gather(*receivers, return_exceptions=True)
    waiters: list[asyncio.Future[Any]] = [stopping, reports]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if reports.done():
            return
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker drains and says offline first
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reports), _EXIT_GRACE_S)
    finally:
        stopping.cancel()

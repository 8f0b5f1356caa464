"""Consumers of the event log, and the loop that feeds each one.

A consumer handles events in log order and keeps a checkpoint of the last one it handled,
so that it resumes there after a restart: at least once, and idempotent by position (a
replayed event changes nothing). A failing consumer retries the same events with back-off
and holds only itself back; the others go on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from core.eventlog import FileCheckpoints, LogEvent
from core.health import Component
from core.loops import log_failure
from core.ports import EventLog
from core.retry import Backoff

log = logging.getLogger(__name__)

BATCH = 500
IDLE_WAIT_S = 1.0
# Events beyond a reader's position that it cannot read (a damaged record) would make it spin
# and look busy: after this many tries, this far apart, it is reported as failed.
UNREADABLE_TURNS = 20
UNREADABLE_WAIT_S = 0.05


class Consumer(Protocol):
    """Something that acts on events: the stream, a notifier, the ledger, a projection."""

    name: str
    position: int  # the last event handled, as checkpointed

    def load(self) -> None:
        """Read the checkpoint into `position` (blocking; may raise, and is retried)."""
        ...

    def handle(self, events: Sequence[LogEvent]) -> Awaitable[None] | None:
        """Handle events in order and checkpoint; `position` moves as they are done.

        On failure it raises, having checkpointed what it did: the rest comes again.
        Blocking implementations run in a worker thread, coroutines on the event loop.
        """
        ...


async def feed(
    events: EventLog,
    consumer: Consumer,
    component: Component,
    *,
    batch: int = BATCH,
    backoff: Backoff | None = None,
) -> None:
    """Feed `consumer` from its checkpoint for ever (until cancelled)."""
    backoff = backoff or Backoff(first=0.5, most=10.0)
    while True:
        try:
            await _call(component, consumer.load)
            break
        except Exception as exc:  # noqa: BLE001 - reported and retried: its store may be down
            await _failed(component, consumer, exc, backoff)
    if consumer.position > events.head:  # the log was lost or replaced; the state was kept
        log.error(
            "consumer %s is at position %d, beyond the event log's head %d: the log was "
            "replaced; it goes on from the head",
            consumer.name,
            consumer.position,
            events.head,
        )
        consumer.position = events.head
    events.note(consumer.name, consumer.position)
    component.backlog = lambda: events.head - consumer.position
    cursor = events.cursor(consumer.position)
    unreadable = 0  # turns in a row with events behind the position and none read
    try:
        while True:
            if cursor.position != consumer.position:  # it failed part-way: go back
                cursor.close()
                cursor = events.cursor(consumer.position)
            if cursor.from_memory():
                found = cursor.next_batch(batch)
            else:
                found = await asyncio.to_thread(cursor.next_batch, batch)
            if not found:
                unreadable = await _nothing_read(events, cursor.position, component, unreadable)
                continue
            unreadable = 0
            try:
                await _call(component, consumer.handle, found)
            except Exception as exc:  # noqa: BLE001 - reported and retried with back-off
                await _failed(component, consumer, exc, backoff)
            else:
                backoff.reset()
                component.progress()
            events.note(consumer.name, consumer.position)
    finally:
        cursor.close()


async def _nothing_read(
    events: EventLog, position: int, component: Component, unreadable: int
) -> int:
    """Wait for more; the count of turns in a row with events there but none read."""
    if events.head > position:  # there, but not read: a moment, or a damaged record
        unreadable += 1
        if unreadable >= UNREADABLE_TURNS:
            component.fault(f"the event log cannot be read after position {position}")
        await asyncio.sleep(UNREADABLE_WAIT_S)
        return unreadable
    component.progress()
    await events.wait_async(position, IDLE_WAIT_S)
    return 0


async def _call(component: Component, function: Callable[..., Any], *args: object) -> None:
    """Run a consumer's method: a coroutine here, anything else in a worker thread."""
    component.busy()
    try:
        if inspect.iscoroutinefunction(function):
            await function(*args)
        else:
            result: Any = await asyncio.to_thread(function, *args)
            if inspect.isawaitable(result):
                await result
    finally:
        component.idle()


async def _failed(
    component: Component, consumer: Consumer, exc: Exception, backoff: Backoff
) -> None:
    delay = backoff.next()
    component.failing(f"{type(exc).__name__}: {exc}")
    log_failure(f"consumer {consumer.name}", exc, backoff.attempts, delay, consumer.position)
    await asyncio.sleep(delay)


class Checkpointed:
    """A consumer whose position is a file beside the log; a new one starts at the head."""

    name: str

    def __init__(self, events: EventLog, checkpoints: FileCheckpoints) -> None:
        self._events = events
        self._checkpoints = checkpoints
        self.position = 0

    def load(self) -> None:
        """Read the position; an output added to the configuration starts with what comes."""
        saved = self._checkpoints.load(self.name)
        if saved is None:
            saved = self._events.head
            self._checkpoints.save(self.name, saved)  # a crash must not make it start later
        self.position = saved

    def _save(self, position: int) -> None:
        if position != self.position:
            self._checkpoints.save(self.name, position)
            self.position = position

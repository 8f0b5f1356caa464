"""Fan-out of live events (alert and ticket changes) from worker threads to stream clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

REPLAY = 1000  # events kept for clients that reconnect with Last-Event-ID
QUEUE = 10_000  # a client further behind than this is cut off (it reconnects and replays)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event: its number, its type (`alert`, `ticket`), its JSON body and institution."""

    id: int
    event: str
    data: bytes
    institution: str | None = None  # whose it is: users who see only some get only theirs


class Subscription:
    """One client's queue; iterate with `await next_event()`."""

    def __init__(self, hub: Broadcaster, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self._loop = loop
        self.queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(QUEUE)
        self.overflowed = False

    def _offer(self, event: StreamEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._end()

    def _end(self) -> None:
        self.overflowed = True  # nothing more is offered
        self.queue._queue.clear()  # type: ignore[attr-defined]  # room for the end mark
        self.queue.put_nowait(None)

    def close(self) -> None:
        """Stop receiving events."""
        self._hub._remove(self)


class Broadcaster:
    """Thread-safe publish; each subscriber gets every event in order on its own loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._recent: deque[StreamEvent] = deque(maxlen=REPLAY)
        self._next_id = 1

    def publish(self, event: str, body: Any, institution: str | None = None) -> StreamEvent:
        """Send an event to every subscriber; never blocks on a slow one."""
        data = orjson.dumps(body)
        gone = []
        with self._lock:  # numbered and queued in one step: every client sees one order
            item = StreamEvent(self._next_id, event, data, institution)
            self._next_id += 1
            self._recent.append(item)
            for subscriber in self._subscribers:
                try:
                    subscriber._loop.call_soon_threadsafe(subscriber._offer, item)
                except RuntimeError:  # its loop has closed: the client is gone
                    gone.append(subscriber)
            self._subscribers.difference_update(gone)
        return item

    def subscribe(self, last_id: int | None = None) -> Subscription:
        """A subscription on the running loop, first replaying what came after `last_id`."""
        subscription = Subscription(self, asyncio.get_running_loop())
        with self._lock:
            if last_id is not None:
                for item in self._recent:
                    if item.id > last_id:
                        subscription._offer(item)
            self._subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """End every stream (at shutdown): each client gets its end mark and reconnects later."""
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscriber in subscribers:
            with contextlib.suppress(RuntimeError):
                subscriber._loop.call_soon_threadsafe(subscriber._end)

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        """How many clients listen."""
        with self._lock:
            return len(self._subscribers)

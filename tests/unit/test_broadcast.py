"""The live-event fan-out behind GET /api/v1/stream."""

from __future__ import annotations

import asyncio
import threading

import orjson

from core import broadcast
from core.broadcast import Broadcaster, StreamEvent, Subscription


async def take(subscription: Subscription, n: int) -> list[StreamEvent | None]:
    return [await asyncio.wait_for(subscription.queue.get(), 1) for _ in range(n)]


async def test_every_subscriber_gets_every_event_in_order_from_any_thread() -> None:
    hub = Broadcaster()
    first, second = hub.subscribe(), hub.subscribe()
    workers = [
        threading.Thread(target=lambda: [hub.publish("alert", {"n": i}) for i in range(50)])
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    got = [await take(s, 100) for s in (first, second)]
    ids = [[e.id for e in events if e is not None] for events in got]
    assert ids[0] == ids[1] == list(range(1, 101)), "one order, the same for everyone"
    assert hub.subscribers == 2
    first.close()
    assert hub.subscribers == 1


async def test_a_reconnecting_client_replays_what_it_missed() -> None:
    hub = Broadcaster()
    for i in range(5):
        hub.publish("alert", {"n": i})
    late = hub.subscribe(last_id=3)
    events = await take(late, 2)
    assert [(e.id, orjson.loads(e.data)) for e in events if e] == [(4, {"n": 3}), (5, {"n": 4})]
    fresh = hub.subscribe()
    assert fresh.queue.empty(), "no Last-Event-ID: only what comes next"


async def test_a_client_too_far_behind_is_cut_off_not_the_others(monkeypatch: object) -> None:
    setattr(broadcast, "QUEUE", 3)  # noqa: B010 - a small queue for the test
    try:
        hub = Broadcaster()
        slow, quick = hub.subscribe(), hub.subscribe()
    finally:
        setattr(broadcast, "QUEUE", 10_000)  # noqa: B010
    for i in range(2):
        hub.publish("alert", {"n": i})
    assert [e.id for e in await take(quick, 2) if e] == [1, 2]
    for i in range(2, 5):
        hub.publish("alert", {"n": i})
    await asyncio.sleep(0)
    assert await take(slow, 1) == [None], "the end mark: it reconnects with Last-Event-ID"
    assert [e.id for e in await take(quick, 3) if e] == [3, 4, 5]


async def test_close_ends_every_stream() -> None:
    hub = Broadcaster()
    subscription = hub.subscribe()
    hub.publish("alert", {})
    hub.close()
    await asyncio.sleep(0)
    assert await take(subscription, 1) == [None]
    assert hub.subscribers == 0

"""A fleet of simulated detectors publishing to a broker at a fixed total rate."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable

from core.models import Channel
from simulators.device import SimDevice
from simulators.mqtt import Connection, Will
from simulators.pacing import Pacer
from simulators.payloads import DEFAULT_PREFIX, MALFORMED, Outgoing, malformed_payload
from simulators.plan import RunStats, SimOptions, plan_connections
from simulators.registry import FleetSpec, build_fleet_spec, heartbeat_for

# SimOptions and RunStats live in simulators.plan; they are re-exported for callers of Simulation.
__all__ = ["Fleet", "RunStats", "SimOptions", "Simulation"]

log = logging.getLogger("hazardwatch.simulators.fleet")

_BATCH_LIMIT = 1000  # publishes between two yields to the event loop
_DRAIN_S = 5.0
_CONNECT_WAIT_S = 10.0
# At high rates, publish in batches every few ms: a loop turn per message costs more than
# the message. Messages leave at most this late; the average rate is unaffected.
_TICK_S = 0.004


class Fleet:
    """The devices of a FleetSpec and the order they speak in (round robin, scenarios first)."""

    def __init__(
        self,
        spec: FleetSpec,
        *,
        seed: int = 1,
        prefix: str = DEFAULT_PREFIX,
        malformed: float = 0.0,
        worker: int = 0,
    ) -> None:
        if not 0.0 <= malformed <= 1.0:
            raise ValueError("malformed must be a fraction between 0 and 1")
        self.spec = spec
        self.prefix = prefix
        self.malformed = malformed
        self.devices = [SimDevice(d, seed=seed, prefix=prefix) for d in spec.devices]
        self._index = {device.id: i for i, device in enumerate(self.devices)}
        self._rng = random.Random(f"hazardwatch-schedule/{seed}/{worker}")
        self._cursor = 0
        self._urgent: deque[SimDevice] = deque()
        self.on_urgent: Callable[[], None] | None = None  # told when a scenario queues messages
        for device in self.devices:
            device.on_pending = self._queue_urgent

    @classmethod
    def build(
        cls,
        institutions: int,
        devices: int,
        *,
        seed: int = 1,
        rate: float = 2.0,
        prefix: str = DEFAULT_PREFIX,
        malformed: float = 0.0,
        share: tuple[int, int] = (0, 1),
    ) -> Fleet:
        """A deterministic fleet whose heartbeat suits the rate; `share` (i, n) keeps every n-th."""
        heartbeat = heartbeat_for(devices, rate, malformed)
        spec = build_fleet_spec(institutions, devices, seed, heartbeat_s=heartbeat)
        index, parts = share
        if parts > 1:
            spec = FleetSpec(spec.institutions, spec.devices[index::parts])
        return cls(spec, seed=seed, prefix=prefix, malformed=malformed, worker=index)

    def device(self, device_id: str) -> SimDevice:
        """The device with this id (KeyError if there is none)."""
        return self.devices[self._index[device_id]]

    def index_of(self, device_id: str) -> int:
        """The position of a device in `devices`."""
        return self._index[device_id]

    def next_message(
        self, now_ms: int, ready: Callable[[int], bool] = lambda _: True
    ) -> tuple[int, Outgoing] | None:
        """The next publish and the index of its device; None when no ready device speaks."""
        urgent = self.next_urgent(now_ms, ready)
        if urgent is not None:
            return urgent
        count = len(self.devices)
        if count and self.malformed and self._rng.random() < self.malformed:
            # Bad input takes the slot without using up a device's turn; any device may send it.
            index = self._rng.randrange(count)
            if ready(index):
                return index, self._malformed(self.devices[index], now_ms)
        for _ in range(count):
            index = self._cursor
            self._cursor = (index + 1) % count
            if ready(index):
                message = self.devices[index].next_message(now_ms)
                if message is not None:
                    return index, message
        return None

    def next_urgent(
        self, now_ms: int, ready: Callable[[int], bool] = lambda _: True
    ) -> tuple[int, Outgoing] | None:
        """The next message a scenario queued (alarm, fault…), if any; None otherwise."""
        while self._urgent:
            device = self._urgent[0]
            index = self._index[device.id]
            if device.pending == 0 or device.silent:
                self._urgent.popleft()
                continue
            if not ready(index):
                return None
            message = device.next_message(now_ms)
            if device.pending == 0:
                self._urgent.popleft()
            if message is not None:
                return index, message
        return None

    def _queue_urgent(self, device: SimDevice) -> None:
        self._urgent.append(device)
        if self.on_urgent is not None:
            self.on_urgent()

    def _malformed(self, device: SimDevice, now_ms: int) -> Outgoing:
        spec = device.spec
        topic, payload, _ = malformed_payload(
            self._rng,
            prefix=self.prefix,
            institution=spec.institution,
            device=spec.id,
            now_ms=now_ms,
        )
        return Outgoing(topic, payload, MALFORMED)


class Simulation:
    """Runs a fleet against a broker: connections, paced publishing, clean shutdown."""

    def __init__(self, options: SimOptions, fleet: Fleet | None = None) -> None:
        self.options = options
        self.fleet = fleet or Fleet.build(
            options.institutions,
            options.devices,
            seed=options.seed,
            rate=options.rate,
            prefix=options.prefix,
            malformed=options.malformed,
            share=options.share,
        )
        self.stats = RunStats(options.own_rate)
        self.connections: list[Connection] = []
        self._route: list[int] = []  # device index -> connection index
        self._members: list[list[int]] = []  # connection index -> device indexes
        self._per_device = True
        self._kick = asyncio.Event()  # a scenario queued messages: send them now
        self.fleet.on_urgent = self._kick.set

    async def run(self, stop: asyncio.Event | None = None) -> RunStats:
        """Publish until `stop`, the duration or the count; then say offline and disconnect."""
        stop = stop or asyncio.Event()
        opts = self.options
        self._open_connections()
        async with asyncio.TaskGroup() as group:
            for conn in self.connections:
                group.create_task(conn.run(), name=f"mqtt-{conn.client_id}")
            try:
                await self._wait_connected(stop, min(_CONNECT_WAIT_S, opts.duration or math.inf))
                await self._publish_loop(stop)
            finally:
                await self._shutdown()
        return self.stats

    @property
    def connected(self) -> bool:
        """True once every connection is up."""
        return bool(self.connections) and all(c.connected for c in self.connections)

    def power_off(self, device_id: str) -> None:
        """The device dies: it falls silent and goes `offline` (by its last will if it has one)."""
        index = self.fleet.index_of(device_id)
        device, conn = self.fleet.devices[index], self.connections[self._route[index]]
        device.go_silent()
        if self._per_device:
            conn.suspend()
        elif conn.publish(device.status_offline(), self.options.qos):
            self.stats.sent[Channel.STATUS] += 1

    def power_on(self, device_id: str) -> None:
        """The device comes back: it reconnects (or says `online`) and publishes again."""
        index = self.fleet.index_of(device_id)
        device, conn = self.fleet.devices[index], self.connections[self._route[index]]
        device.resume()
        if self._per_device:
            conn.resume()
        elif conn.publish(device.status_online(int(time.time() * 1000)), self.options.qos):
            self.stats.sent[Channel.STATUS] += 1

    def _open_connections(self) -> None:
        opts, devices = self.options, self.fleet.devices
        shared = plan_connections(len(devices), opts.own_connections)
        self._per_device = shared is None
        if shared is None:
            for device in devices:
                will = Will(device.status_offline().topic, device.status_offline().payload)
                client_id = f"{opts.client_prefix}{device.id}"
                self.connections.append(
                    Connection(opts.broker, client_id, will=will, window=opts.window)
                )
            self._route = list(range(len(devices)))
        else:
            # Shared connections cannot carry a last will per device: `_shutdown` publishes
            # `offline` for each device instead, which a crash of the simulator skips.
            tag = f"hwsim-{os.getpid()}-{opts.seed}"
            self.connections = [
                Connection(opts.broker, f"{tag}-{k}", window=opts.window) for k in range(shared)
            ]
            self._route = [i % shared for i in range(len(devices))]
        self._members = [[] for _ in self.connections]
        for index, conn_index in enumerate(self._route):
            self._members[conn_index].append(index)
        for conn_index, conn in enumerate(self.connections):
            conn.on_connected = functools.partial(self._announce, conn_index=conn_index)

    async def _wait_connected(self, stop: asyncio.Event, seconds: float) -> None:
        """Give the links a moment to come up so that the first slots are not wasted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not stop.is_set() and loop.time() < deadline:
            if all(conn.connected for conn in self.connections):
                return
            await asyncio.sleep(0.05)
        down = sum(not conn.connected for conn in self.connections)
        if down:
            log.warning("starting with %d of %d connections down", down, len(self.connections))

    def _announce(self, conn: Connection, conn_index: int) -> None:
        """Retained `online` status for every device of a (re)connected link."""
        now_ms = int(time.time() * 1000)
        for index in self._members[conn_index]:
            device = self.fleet.devices[index]
            if not device.silent and conn.publish(device.status_online(now_ms), self.options.qos):
                self.stats.sent[Channel.STATUS] += 1

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        start = loop.time()
        pacer = Pacer(opts.own_rate, start)
        deadline = start + opts.duration if opts.duration is not None else math.inf
        budget = opts.own_count if opts.own_count is not None else math.inf
        while not stop.is_set():
            now = loop.time()
            left = budget - self.stats.paced - self.stats.unsent
            if now >= deadline or left <= 0:
                break
            self._kick.clear()
            await self._publish_urgent()
            taken = pacer.take(now, int(min(_BATCH_LIMIT, left)))
            if taken:
                await self._publish_batch(taken)
            await self._doze(min(pacer.delay(loop.time()), deadline - loop.time(), 0.25))
        self.stats.elapsed = loop.time() - start
        self.stats.skipped = pacer.skipped

    async def _doze(self, pause: float) -> None:
        """Sleep until the next slot or a scenario's kick; behind schedule, only yield."""
        if pause <= 0:
            await asyncio.sleep(0)  # PUBACKs must still be read
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), max(pause, _TICK_S))

    def _ready(self, index: int) -> bool:
        return self.connections[self._route[index]].connected

    async def _publish_urgent(self) -> None:
        """Scenario messages go out at once, on top of the paced rate."""
        # A detector in alarm does not wait for its reporting interval.
        now_ms = int(time.time() * 1000)
        for _ in range(_BATCH_LIMIT):
            picked = self.fleet.next_urgent(now_ms, self._ready)
            if picked is None:
                return
            await self._send(*picked)

    async def _publish_batch(self, count: int) -> None:
        now_ms = int(time.time() * 1000)
        conns, route, next_message = self.connections, self._route, self.fleet.next_message
        for done in range(count):
            picked = next_message(now_ms, self._ready)
            if picked is None:
                self.stats.unsent += count - done
                return
            conn = conns[route[picked[0]]]
            if conn.inflight < conn.window:  # the usual case, without a coroutine per message
                self._publish(conn, picked[1])
            else:
                await self._send(*picked)

    async def _send(self, index: int, message: Outgoing) -> None:
        conn = self.connections[self._route[index]]
        if conn.inflight >= conn.window:
            await conn.wait_window()
        self._publish(conn, message)

    def _publish(self, conn: Connection, message: Outgoing) -> None:
        if conn.publish(message, self.options.qos):
            self.stats.sent[message.label] += 1
        else:
            self.stats.unsent += 1

    async def _shutdown(self) -> None:
        qos = self.options.qos
        for index, device in enumerate(self.fleet.devices if self.options.farewell else ()):
            if self.connections[self._route[index]].publish(device.status_offline(), qos):
                self.stats.sent[Channel.STATUS] += 1
        drained = await asyncio.gather(*(c.drain(_DRAIN_S) for c in self.connections))
        if not all(drained):
            log.warning(
                "shutdown: %d connection(s) left messages unacknowledged", drained.count(False)
            )
        self.stats.acked = sum(c.acked for c in self.connections)
        for conn in self.connections:
            conn.close()

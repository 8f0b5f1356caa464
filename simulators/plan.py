"""What a simulation run is asked to do, how it is split up, and what it did."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace

from core.models import Channel
from simulators.mqtt import BrokerURL
from simulators.payloads import DEFAULT_PREFIX, MALFORMED

PER_DEVICE_LIMIT = 200  # above this many devices, one connection each costs too much
DEFAULT_CONNECTIONS = 8
# paho spends ~60 µs of CPU on each QoS 1 publish and its PUBACK, so one Python process
# tops out near 9,000 msg/s; above this rate the fleet is spread over processes.
RATE_PER_PROCESS = 4000.0
MAX_PROCESSES = 4


def _part(total: int, index: int, parts: int) -> int:
    """The index-th of `parts` near-equal shares of `total`."""
    return total // parts + (index < total % parts)


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What `hazardwatch simulate` was asked to do (totals for the whole fleet)."""

    broker: BrokerURL
    institutions: int = 3
    devices: int = 12
    rate: float = 2.0
    seed: int = 1
    prefix: str = DEFAULT_PREFIX
    duration: float | None = None
    count: int | None = None
    malformed: float = 0.0
    connections: int | None = None
    qos: int = 1
    window: int = 1000  # unacknowledged messages per connection before publishing waits
    processes: int | None = None  # None: from the rate and the connections
    share: tuple[int, int] = (0, 1)  # (i, n): this process runs devices i, i+n, i+2n, …
    farewell: bool = True  # at the end, every device says `offline` (a scenario's do not)
    client_prefix: str = ""  # before a device id in its own connection's client id

    @property
    def own_rate(self) -> float:
        """The rate this process paces at."""
        return self.rate / self.share[1]

    @property
    def own_count(self) -> int | None:
        """The messages this process sends before it stops."""
        index, parts = self.share
        return None if self.count is None else _part(self.count, index, parts)

    @property
    def own_connections(self) -> int | None:
        """Shared connections for this process (None: one per device or the default)."""
        index, parts = self.share
        if self.connections is None:
            return None if self.devices <= PER_DEVICE_LIMIT else DEFAULT_CONNECTIONS // parts
        return max(1, _part(self.connections, index, parts))

    def shares(self) -> list[SimOptions]:
        """One options object per worker process."""
        parts = plan_processes(self)
        return [replace(self, share=(index, parts)) for index in range(parts)]


def plan_processes(options: SimOptions) -> int:
    """How many processes: the request, else enough for the rate (never more than links)."""
    links = options.connections or (
        options.devices if options.devices <= PER_DEVICE_LIMIT else DEFAULT_CONNECTIONS
    )
    wanted = options.processes or min(
        MAX_PROCESSES, os.cpu_count() or 1, math.ceil(options.rate / RATE_PER_PROCESS)
    )
    return max(1, min(wanted, links, max(options.devices, 1)))


def plan_connections(
    devices: int, requested: int | None, per_device_limit: int = PER_DEVICE_LIMIT
) -> int | None:
    """None for one connection per device (with its last will), else how many to share."""
    if requested is None:
        return None if devices <= per_device_limit else DEFAULT_CONNECTIONS
    if requested < 1:
        raise ValueError("connections must be at least 1")
    return None if requested >= devices else requested


@dataclass(slots=True)
class RunStats:
    """What a run sent, per channel, and how fast."""

    rate: float
    sent: Counter[str] = field(default_factory=Counter)
    acked: int = 0
    unsent: int = 0  # slots with no connected device to speak
    skipped: int = 0  # slots dropped after a stall
    elapsed: float = 0.0

    @property
    def paced(self) -> int:
        """Rate-paced messages: telemetry, events and bad input (status is extra)."""
        return self.sent[Channel.TELEMETRY] + self.sent[Channel.EVENT] + self.sent[MALFORMED]

    @property
    def achieved_rate(self) -> float:
        """Paced messages per second over the run."""
        return self.paced / self.elapsed if self.elapsed > 0 else 0.0

    @classmethod
    def merge(cls, rate: float, parts: list[RunStats]) -> RunStats:
        """The stats of worker processes added up (elapsed: the longest)."""
        total = cls(rate)
        for part in parts:
            total.sent.update(part.sent)
            total.acked += part.acked
            total.unsent += part.unsent
            total.skipped += part.skipped
            total.elapsed = max(total.elapsed, part.elapsed)
        return total

    def summary(self) -> str:
        """The one-line summary printed at exit."""
        return (
            f"simulate: sent telemetry={self.sent[Channel.TELEMETRY]} "
            f"event={self.sent[Channel.EVENT]} status={self.sent[Channel.STATUS]} "
            f"malformed={self.sent[MALFORMED]} acked={self.acked} unsent={self.unsent} "
            f"skipped={self.skipped} elapsed={self.elapsed:.2f}s "
            f"rate={self.achieved_rate:.1f} msg/s (target {self.rate:g})"
        )

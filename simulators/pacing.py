"""Fixed-rate pacing from a start time, so that rounding and slow ticks never add up to drift."""

from __future__ import annotations

import math


class Pacer:
    """Slot k falls due at `start + k / rate`; callers take the due slots in batches."""

    def __init__(self, rate: float, start: float, *, max_lag_s: float = 1.0) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number, not {rate!r}")
        self.rate = rate
        self.start = start
        self.taken = 0
        self.skipped = 0
        # After a stall (broker away, machine busy) send at most this much backlog at once;
        # older slots are skipped and counted, rather than flooding the broker.
        self.max_backlog = max(1, math.ceil(rate * max_lag_s))

    def due(self, now: float) -> int:
        """Slots whose time has come and that are not taken yet."""
        if now < self.start:
            return 0
        return max(0, math.floor((now - self.start) * self.rate) + 1 - self.taken)

    def take(self, now: float, limit: int) -> int:
        """Take up to `limit` due slots; skip what lies beyond the allowed backlog."""
        due = self.due(now)
        if due > self.max_backlog:
            self.skipped += due - self.max_backlog
            self.taken += due - self.max_backlog
            due = self.max_backlog
        count = max(0, min(due, limit))
        self.taken += count
        return count

    def next_time(self) -> float:
        """When the next untaken slot falls due."""
        return self.start + self.taken / self.rate

    def delay(self, now: float) -> float:
        """Seconds to sleep until the next slot (0 when one is due already)."""
        return max(0.0, self.next_time() - now)

"""Open live streams, counted per user and in all: each holds a connection, a reader of the
event log and a task, so one user's forgotten tabs (or a script) must not take them all."""

from __future__ import annotations

import threading
from collections import Counter


class StreamSlots:
    """How many live streams each user has open, within a limit per user and in all."""

    def __init__(self, per_user: int = 8, total: int = 500) -> None:
        self.per_user = per_user
        self.total = total
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    def refusal(self, user: str) -> str | None:
        """Why `user` may not open another stream now; None if they may."""
        with self._lock:
            if self._open[user] >= self.per_user:
                return (
                    f"{user} has {self._open[user]} live streams open, the most one user may "
                    "have: close one (another tab or window?) and try again"
                )
            if sum(self._open.values()) >= self.total:
                return f"the service has {self.total} live streams open, its limit: try again"
        return None

    def take(self, user: str) -> None:
        """Count a stream as open (when it starts: a stream that never started holds none)."""
        with self._lock:
            self._open[user] += 1

    def give_back(self, user: str) -> None:
        """Count a stream as closed."""
        with self._lock:
            self._open[user] -= 1
            if self._open[user] <= 0:
                del self._open[user]

    def open_streams(self, user: str | None = None) -> int:
        """Streams open now: of one user, or in all."""
        with self._lock:
            return self._open[user] if user is not None else sum(self._open.values())

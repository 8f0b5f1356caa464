"""Silence detection: when a device has not been heard of for longer than its window."""

from __future__ import annotations

import math
import os
import struct
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

# One record per device in the snapshot: last receive time (epoch s) and id length, then id.
_RECORD = struct.Struct("<dH")


class OfflineWatch:
    """Last receive time per device, and a timer wheel of their deadlines.

    A message costs one dict store. Deadlines are checked lazily: when the slot of a device's
    deadline comes, its real deadline is computed from its latest message and it is either due
    or filed again. Slots are `resolution_s` wide, so a device is reported at most that long
    after its deadline (plus however often `due` is called).
    Not thread-safe: the engine calls it under its lock.
    """

    def __init__(self, window_s: Callable[[str], float], resolution_s: float = 0.05) -> None:
        self._window_s = window_s
        self._resolution = resolution_s
        self._seen: dict[str, float] = {}
        self._wheel: defaultdict[int, set[str]] = defaultdict(set)
        self._slot: dict[str, int] = {}  # the slot each device is filed under
        self._silent: set[str] = set()  # reported silent; waits for a message
        self._next = 0  # the first slot not checked yet

    def seen(self, device: str, at: float) -> None:
        """A message from `device`, received at `at` (epoch seconds)."""
        if at > self._seen.get(device, -math.inf):
            self._seen[device] = at
        if device not in self._slot:
            self._file(device)
        self._silent.discard(device)

    def refile(self, device: str) -> None:
        """The device's window changed: file its deadline again."""
        slot = self._slot.pop(device, None)
        if slot is not None:
            self._wheel[slot].discard(device)
        if device in self._seen:
            self._file(device)

    def last_seen(self, device: str) -> float | None:
        """When the device was last heard of, epoch seconds."""
        return self._seen.get(device)

    def _file(self, device: str) -> None:
        deadline = self._seen[device] + self._window_s(device)
        # The slot whose end is at or after the deadline: checked once that end has come.
        slot = max(math.ceil(deadline / self._resolution), self._next)
        self._slot[device] = slot
        self._wheel[slot].add(device)

    def due(self, now: float) -> list[tuple[str, float]]:
        """Devices whose silence passed their window by `now`: (device, silent seconds)."""
        found: list[tuple[str, float]] = []
        current = math.floor(now / self._resolution)
        if self._wheel and self._next < current - 1:  # first call, or a long pause: skip ahead
            self._next = min(current, *self._wheel)
        while self._next <= current:
            for device in self._wheel.pop(self._next, ()):
                del self._slot[device]
                last = self._seen[device]
                if last + self._window_s(device) <= now:
                    if device not in self._silent:
                        self._silent.add(device)
                        found.append((device, now - last))
                else:
                    self._file(device)
            self._next += 1
            if not self._wheel:
                self._next = max(self._next, current)
                break
        return found

    def save(self, path: Path) -> None:
        """Write every device's last receive time, atomically."""
        chunks = []
        for device, at in self._seen.items():
            name = device.encode()
            chunks.append(_RECORD.pack(at, len(name)))
            chunks.append(name)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            handle.write(b"".join(chunks))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def load(self, path: Path) -> int:
        """Read a snapshot written by `save`; return how many devices it had."""
        if not path.exists():
            return 0
        data = path.read_bytes()
        pos = count = 0
        while pos + _RECORD.size <= len(data):
            at, length = _RECORD.unpack_from(data, pos)
            pos += _RECORD.size
            self.seen(data[pos : pos + length].decode(), at)
            pos += length
            count += 1
        return count

    def __len__(self) -> int:
        return len(self._seen)

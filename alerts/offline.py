"""Silence detection: when a device has not been heard of for longer than its window."""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

# One record per device in the snapshot: last receive time (epoch s) and id length, then id.
_RECORD = struct.Struct("<dH")
# A device's entry, one int: the slot its deadline is filed under (0: not filed) above its
# last receive time in epoch milliseconds (44 bits: until the year 2527).
_SEEN_BITS = 44
_SEEN_MASK = (1 << _SEEN_BITS) - 1


class OfflineWatch:
    """Last receive time per device, and a timer wheel of their deadlines.

    A message costs one dict store. Deadlines are checked lazily: when the slot of a device's
    deadline comes, its real deadline is computed from its latest message and it is either due
    or filed again. Slots are `resolution_s` wide, so a device is reported at most that long
    after its deadline (plus however often `due` is called). Each device costs one int and one
    list entry, and no timer: a million devices fit in about 130 MB.
    Not thread-safe: the engine calls it under its lock.
    """

    def __init__(self, window_s: Callable[[str], float], resolution_s: float = 0.05) -> None:
        self._window_s = window_s
        self._resolution = resolution_s
        self._devices: dict[str, int] = {}  # device -> slot << _SEEN_BITS | last seen (ms)
        # slot -> devices filed there. A device filed again elsewhere leaves a stale entry
        # behind, skipped when its slot comes: cheaper than removing it from a list.
        self._wheel: dict[int, list[str]] = {}
        self._silent: set[str] = set()  # reported silent; waits for a message
        self._next = 0  # the first slot not checked yet

    def seen(self, device: str, at: float) -> None:
        """A message from `device`, received at `at` (epoch seconds)."""
        at_ms = min(max(round(at * 1000), 0), _SEEN_MASK)
        entry = self._devices.get(device)
        if entry is None or not entry >> _SEEN_BITS:  # new, or reported silent: file it
            self._file(device, at_ms if entry is None else max(at_ms, entry & _SEEN_MASK))
        elif at_ms > entry & _SEEN_MASK:
            self._devices[device] = entry >> _SEEN_BITS << _SEEN_BITS | at_ms
        self._silent.discard(device)

    def refile(self, device: str) -> None:
        """The device's window changed: file its deadline again."""
        entry = self._devices.get(device)
        if entry is not None:
            self._file(device, entry & _SEEN_MASK)

    def last_seen(self, device: str) -> float | None:
        """When the device was last heard of, epoch seconds."""
        entry = self._devices.get(device)
        return None if entry is None else (entry & _SEEN_MASK) / 1000

    def _file(self, device: str, at_ms: int) -> None:
        deadline = at_ms / 1000 + self._window_s(device)
        # The slot whose end is at or after the deadline: checked once that end has come.
        slot = max(math.ceil(deadline / self._resolution), self._next, 1)
        self._devices[device] = slot << _SEEN_BITS | at_ms
        filed = self._wheel.get(slot)
        if filed is None:
            self._wheel[slot] = [device]
        else:
            filed.append(device)

    def due(self, now: float) -> list[tuple[str, float]]:
        """Devices whose silence passed their window by `now`: (device, silent seconds)."""
        found: list[tuple[str, float]] = []
        current = math.floor(now / self._resolution)
        if self._wheel and self._next < current - 1:  # first call, or a long pause: skip ahead
            self._next = min(current, *self._wheel)
        while self._next <= current:
            for device in self._wheel.pop(self._next, ()):
                self._check(device, self._next, now, found)
            self._next += 1
            if not self._wheel:
                self._next = max(self._next, current)
                break
        return found

    def _check(self, device: str, slot: int, now: float, found: list[tuple[str, float]]) -> None:
        """A device filed under `slot`, which has come: due, or filed again."""
        entry = self._devices[device]
        if entry >> _SEEN_BITS != slot:
            return  # filed again elsewhere since: a stale entry
        at_ms = entry & _SEEN_MASK
        last = at_ms / 1000
        if last + self._window_s(device) <= now:
            self._devices[device] = at_ms  # not filed until it is heard of again
            if device not in self._silent:
                self._silent.add(device)
                found.append((device, now - last))
        else:
            self._file(device, at_ms)

    def copy(self) -> list[tuple[str, int]]:
        """What `save` writes, taken at once (under the engine's lock: milliseconds even for a
        large fleet; the writing happens after, without the lock)."""
        return list(self._devices.items())

    def save(self, path: Path, entries: list[tuple[str, int]] | None = None) -> None:
        """Write every device's last receive time (from `copy`, or now), atomically."""
        chunks = []
        for device, entry in self._devices.items() if entries is None else entries:
            name = device.encode()
            chunks.append(_RECORD.pack((entry & _SEEN_MASK) / 1000, len(name)))
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
        return len(self._devices)

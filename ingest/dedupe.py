"""Recognises redelivered messages, so that at-least-once delivery stores each one once."""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque

# MQTT redelivers within seconds of the first attempt (MQTT 5.0 section 4.4), so a short
# window per device is enough and keeps memory flat for large fleets.
WINDOW_PER_DEVICE = 32


def digest(payload: bytes) -> int:
    """A short, stable fingerprint of a payload."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "big")


class _Recent:
    __slots__ = ("order", "seen")

    def __init__(self) -> None:
        self.order: deque[int] = deque()
        self.seen: set[int] = set()

    def add(self, key: int) -> None:
        if key in self.seen:
            return
        self.order.append(key)
        self.seen.add(key)
        if len(self.order) > WINDOW_PER_DEVICE:
            self.seen.discard(self.order.popleft())


class Deduplicator:
    """Remembers the last payloads of each device.

    A message is a duplicate when the same device sent the very same bytes recently and the
    bytes identify it: they carry a `seq`, or the broker marked it as a redelivery (DUP flag)
    or as a retained replay. A rebooted device that restarts its `seq` sends new timestamps,
    hence new bytes, and is not mistaken for a duplicate.
    """

    def __init__(self, max_devices: int = 1_000_000) -> None:
        self._devices: OrderedDict[str, _Recent] = OrderedDict()
        self._max_devices = max_devices

    def is_duplicate(self, key: str, payload_digest: int, *, identifying: bool) -> bool:
        """True for a redelivery; otherwise remember the payload and return False.

        `key` is the device id (or the topic of a message too broken to name one);
        `identifying` says whether equal bytes mean the same message (see the class).
        """
        recent = self._devices.get(key)
        if identifying and recent is not None and payload_digest in recent.seen:
            return True
        self.remember(key, payload_digest)
        return False

    def remember(self, key: str, payload_digest: int) -> None:
        """Record a payload as seen, e.g. when priming from the spool after a restart."""
        recent = self._devices.get(key)
        if recent is None:
            recent = self._devices[key] = _Recent()
            if len(self._devices) > self._max_devices:
                self._devices.popitem(last=False)
        recent.add(payload_digest)

"""Recognises redelivered messages, so that at-least-once delivery stores each one once.

A message is known by its device and, when it carries a `seq`, by that `seq` and the device's
`ts` (contract section 1): the same reading re-sent with other JSON spacing, key order or topic
spelling is the same message. A message without `seq` is known by its payload bytes only, and
equal bytes count as a duplicate only when the broker marked the copy as a redelivery (DUP) or
a retained replay: the same bare "online" may well be a new message.

Each device costs one int (about 80 bytes; 96 once it has restarted) in one dict: the highest
`seq`, a bitmap of the 64 seqs below it, the latest device `ts`, the same of the count before a
restart, the digests of the last four messages without `seq`, and the receive stamp last
given to one of those (Receiver._restamp). MQTT redelivers within seconds of the first attempt
(MQTT 5.0 section 4.4), so a short window is enough.
"""

from __future__ import annotations

import hashlib
from itertools import islice
from typing import NamedTuple

from core.models import DeviceMessage, Event, EventType

WINDOW_SEQ = 64  # seqs at and below the highest one that are remembered
RECENT_DIGESTS = 4  # payload digests remembered, of messages without `seq`
MAX_DEVICES = 1_000_000

# A device's state, packed in one int (the smallest Python object that holds this many bits);
# fields of fixed width, those seldom set at the top so that most ints stay short:
#   ring       the last RECENT_DIGESTS payload digests, 32 bits each, newest lowest; 0: none
#   stamp      the receive stamp last given to a message of the device without ts (ms; 0: none)
#   ts_max     the latest device `ts` of a message with `seq`, epoch ms; 0: none
#   start_ts   the device `ts` of the message that began the current count; 0: none
#   seen       bit i set: `seq` (high - i) of the current count was seen; 0: no count yet
#   high       the highest `seq` of the current count
#   old_seen, old_high: the same of the count before it (a device that restarted)
_DIGEST_BITS = 32
_DIGEST_MASK = (1 << _DIGEST_BITS) - 1
_RING_BITS = RECENT_DIGESTS * _DIGEST_BITS
_RING_MASK = (1 << _RING_BITS) - 1
_TS_MASK = (1 << 48) - 1
_SEQ_MASK = (1 << 64) - 1  # seq is at most 2**64 - 1: orjson reads larger numbers as floats
_SEEN_MASK = (1 << WINDOW_SEQ) - 1
_STAMP_AT = _RING_BITS
_TS_MAX_AT = _STAMP_AT + 48
_START_AT = _TS_MAX_AT + 48
_SEEN_AT = _START_AT + 48
_HIGH_AT = _SEEN_AT + WINDOW_SEQ
_OLD_SEEN_AT = _HIGH_AT + 64
_OLD_HIGH_AT = _OLD_SEEN_AT + WINDOW_SEQ
_BELOW_TS_MAX = (1 << _TS_MAX_AT) - 1  # the ring and the stamp


def digest(payload: bytes) -> int:
    """A short, stable fingerprint of a payload."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "big")


class MessageId(NamedTuple):
    """What identifies a message that carries a `seq`, whatever its bytes."""

    seq: int
    ts_ms: int | None  # the device's own `ts`, if it sent one
    power_on: bool = False  # a power_on event: the device counts anew from here


def identify(message: DeviceMessage) -> MessageId | None:
    """The identity of a message with `seq`; None for one without (known by its bytes)."""
    if message.seq is None:
        return None
    # Through the float: a third of core.clock.to_epoch_ms's time, exact for the milliseconds
    # devices send, and the same for every copy of a message, which is all an identity needs.
    ts_ms = round(message.ts.timestamp() * 1000) if message.ts_from_device else None
    power_on = isinstance(message, Event) and message.type is EventType.POWER_ON
    return MessageId(message.seq, ts_ms, power_on)


class Deduplicator:
    """The identities of each device's recent messages.

    A device that restarts its count (a `power_on` event, or `seq` 0 or 1 after a higher one)
    is not taken for a redelivery: with a device `ts`, a message later than every `ts` seen is
    new whatever its `seq`, and one from before the restart is judged by the count before;
    without `ts`, such a restart is new unless the broker flagged it. This assumes that a
    device's clock does not go back across a restart. Up to `max_devices` devices are
    remembered; beyond that, the first seen are forgotten.
    """

    def __init__(self, max_devices: int = MAX_DEVICES) -> None:
        self._devices: dict[str, int] = {}
        self._max_devices = max_devices

    def is_duplicate(
        self, key: str, payload_digest: int, *, flagged: bool, message: MessageId | None = None
    ) -> bool:
        """True for a message seen before; otherwise remember it and return False.

        `key` is the device id (or the topic of a message too broken to name one); `message`
        the identity of a message with `seq`; `flagged` whether the broker marked this copy
        as a redelivery or a retained replay.
        """
        devices = self._devices
        state = devices.get(key, 0)
        if message is None:
            found = _short(payload_digest)
            if _has_digest(state, found):
                return flagged
            devices[key] = _with_digest(state, found)
        elif _seq_duplicate(state, message, flagged):
            return True
        else:
            devices[key] = _with_seq(state, message)
        if len(devices) > self._max_devices:
            self._forget()
        return False

    def remember(self, key: str, payload_digest: int, message: MessageId | None = None) -> None:
        """Record a message as seen, e.g. when priming from the spool after a restart."""
        state = self._devices.get(key, 0)
        if message is not None:
            self._devices[key] = _with_seq(state, message)
        elif not _has_digest(state, found := _short(payload_digest)):
            self._devices[key] = _with_digest(state, found)
        if len(self._devices) > self._max_devices:
            self._forget()

    def stamp(self, key: str, time_ms: int) -> int:
        """A receive stamp for a message of `key` without ts: `time_ms`, or the last one + 1.

        Kept here, in the same int as the device's identities, because a dict of its own cost
        80 bytes a device (see Receiver._restamp for why stamps must not repeat).
        """
        state = self._devices.get(key, 0)
        last = state >> _STAMP_AT & _TS_MASK
        stamp = min(max(time_ms, last + 1, 0), _TS_MASK)
        self._devices[key] = state & ~(_TS_MASK << _STAMP_AT) | stamp << _STAMP_AT
        if len(self._devices) > self._max_devices:
            self._forget()
        return stamp

    def remember_stamp(self, key: str, time_ms: int) -> None:
        """A stamp given before a restart: later stamps of the device come after it."""
        state = self._devices.get(key, 0)
        if time_ms > state >> _STAMP_AT & _TS_MASK:
            self._devices[key] = (
                state & ~(_TS_MASK << _STAMP_AT) | min(time_ms, _TS_MASK) << _STAMP_AT
            )
            if len(self._devices) > self._max_devices:
                self._forget()

    def __len__(self) -> int:
        return len(self._devices)

    def _forget(self) -> None:
        """Forget the first devices seen: a plain dict keeps insertion order.

        1 % at a time, so that the scan over the slots of deleted keys stays rare.
        """
        devices = self._devices
        for old in list(islice(devices, max(1, self._max_devices // 100))):
            del devices[old]


def _short(payload_digest: int) -> int:
    """32 bits of the digest, never 0 (0 marks an empty slot)."""
    return (payload_digest & _DIGEST_MASK) | 1


def _has_digest(state: int, found: int) -> bool:
    ring = state & _RING_MASK
    for _ in range(RECENT_DIGESTS):
        if ring & _DIGEST_MASK == found:
            return True
        ring >>= _DIGEST_BITS
    return False


def _with_digest(state: int, found: int) -> int:
    ring = ((state & _RING_MASK) << _DIGEST_BITS | found) & _RING_MASK
    return (state >> _RING_BITS << _RING_BITS) | ring


def _has(seen: int, high: int, seq: int) -> bool:
    """Whether `seq` is marked in a window whose top is `high`."""
    back = high - seq
    return 0 <= back < WINDOW_SEQ and bool(seen >> back & 1)


def _seq_duplicate(state: int, message: MessageId, flagged: bool) -> bool:
    seq, ts, power_on = message
    if ts is not None and ts > state >> _TS_MAX_AT & _TS_MASK:
        return False  # the first copy would have raised ts_max to its own ts: the usual case
    seen = state >> _SEEN_AT & _SEEN_MASK
    if not seen:
        return False
    high = state >> _HIGH_AT & _SEQ_MASK
    if ts is None:
        # Nothing tells a restart from a copy but the broker's flag.
        restart = power_on or seq <= 1 < high
        return _has(seen, high, seq) and (flagged or not restart)
    if ts < state >> _START_AT & _TS_MASK:  # sent before the device last counted anew
        return _has(state >> _OLD_SEEN_AT & _SEEN_MASK, state >> _OLD_HIGH_AT, seq)
    return _has(seen, high, seq)


def _with_seq(state: int, message: MessageId) -> int:
    seq, ts, power_on = message
    seq = min(seq, _SEQ_MASK)
    start_ts = state >> _START_AT & _TS_MASK
    ts_max = state >> _TS_MAX_AT & _TS_MASK
    if ts is not None:
        ts = ts if 0 <= ts <= _TS_MASK else (0 if ts < 0 else _TS_MASK)
        if ts < start_ts:
            return state  # a late message of the count before: it changes nothing of this one
        ts_max = max(ts_max, ts)
    seen = state >> _SEEN_AT & _SEEN_MASK
    high = state >> _HIGH_AT & _SEQ_MASK
    old = state >> _OLD_SEEN_AT  # the count before, unchanged unless this one ends
    if not seen or power_on or seq <= 1 < high:  # the device counts anew (contract section 1)
        # Without its own ts (a clock not yet set at boot), the new count still begins after
        # every ts seen so far.
        start_ts = ts if ts is not None else min(ts_max + 1, _TS_MASK) if ts_max else 0
        old = seen | high << WINDOW_SEQ
        seen, high = 1, seq
    elif seq > high:
        shift = seq - high
        seen = (seen << shift | 1) & _SEEN_MASK if shift < WINDOW_SEQ else 1
        high = seq
    elif high - seq < WINDOW_SEQ:
        seen |= 1 << (high - seq)
    return (
        old << _OLD_SEEN_AT
        | high << _HIGH_AT
        | seen << _SEEN_AT
        | start_ts << _START_AT
        | ts_max << _TS_MAX_AT
        | (state & _BELOW_TS_MAX)
    )

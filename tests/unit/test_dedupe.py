"""Redelivered messages are recognised; new ones never are."""

from __future__ import annotations

from ingest.dedupe import WINDOW_PER_DEVICE, Deduplicator, digest

PAYLOAD = b'{"seq": 1042, "co_ppm": 3.5}'


def test_digest_is_stable_and_tells_payloads_apart() -> None:
    assert digest(PAYLOAD) == digest(bytes(PAYLOAD))
    assert digest(PAYLOAD) != digest(PAYLOAD + b" ")
    assert 0 <= digest(b"") < 2**64


def test_the_same_identifying_payload_twice_is_a_duplicate() -> None:
    dedupe = Deduplicator()
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is False
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is True
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is True


def test_a_non_identifying_payload_is_never_a_duplicate() -> None:
    # e.g. a bare "online" status without DUP flag: the same bytes may well be a new message.
    dedupe = Deduplicator()
    for _ in range(3):
        assert dedupe.is_duplicate("dev-1", digest(b"online"), identifying=False) is False


def test_a_non_identifying_payload_is_still_remembered() -> None:
    # The first delivery lacked the DUP flag; its redelivery carries it.
    dedupe = Deduplicator()
    assert dedupe.is_duplicate("dev-1", digest(b"online"), identifying=False) is False
    assert dedupe.is_duplicate("dev-1", digest(b"online"), identifying=True) is True


def test_different_payloads_are_not_duplicates() -> None:
    dedupe = Deduplicator()
    assert dedupe.is_duplicate("dev-1", digest(b'{"seq": 1}'), identifying=True) is False
    assert dedupe.is_duplicate("dev-1", digest(b'{"seq": 2}'), identifying=True) is False


def test_keys_are_independent() -> None:
    dedupe = Deduplicator()
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is False
    assert dedupe.is_duplicate("dev-2", digest(PAYLOAD), identifying=True) is False
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is True
    assert dedupe.is_duplicate("dev-2", digest(PAYLOAD), identifying=True) is True


def test_the_window_per_device_keeps_the_last_entries() -> None:
    dedupe = Deduplicator()
    first = digest(b"first")
    dedupe.is_duplicate("dev-1", first, identifying=True)
    for i in range(WINDOW_PER_DEVICE - 1):
        assert dedupe.is_duplicate("dev-1", digest(b"%d" % i), identifying=True) is False
    # The window is full with `first` the oldest entry: still known.
    assert dedupe.is_duplicate("dev-1", first, identifying=True) is True


def test_the_window_per_device_forgets_old_entries() -> None:
    dedupe = Deduplicator()
    first = digest(b"first")
    dedupe.is_duplicate("dev-1", first, identifying=True)
    for i in range(WINDOW_PER_DEVICE):
        dedupe.is_duplicate("dev-1", digest(b"%d" % i), identifying=True)
    assert dedupe.is_duplicate("dev-1", first, identifying=True) is False
    # The most recent entries are still there.
    assert dedupe.is_duplicate("dev-1", digest(b"%d" % (WINDOW_PER_DEVICE - 1)), identifying=True)


def test_another_device_does_not_push_entries_out_of_the_window() -> None:
    dedupe = Deduplicator()
    dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True)
    for i in range(WINDOW_PER_DEVICE * 3):
        dedupe.is_duplicate("dev-2", digest(b"%d" % i), identifying=True)
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is True


def test_a_repeated_duplicate_does_not_take_a_new_slot() -> None:
    dedupe = Deduplicator()
    first = digest(b"first")
    dedupe.is_duplicate("dev-1", first, identifying=True)
    assert dedupe.is_duplicate("dev-1", digest(b"again"), identifying=True) is False
    for _ in range(WINDOW_PER_DEVICE * 2):
        assert dedupe.is_duplicate("dev-1", digest(b"again"), identifying=True) is True
        assert dedupe.is_duplicate("dev-1", digest(b"again"), identifying=False) is False
    assert dedupe.is_duplicate("dev-1", first, identifying=True) is True


def test_remember_primes_the_window() -> None:
    dedupe = Deduplicator()
    dedupe.remember("dev-1", digest(PAYLOAD))
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is True
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=False) is False
    assert dedupe.is_duplicate("dev-2", digest(PAYLOAD), identifying=True) is False


def test_remember_twice_is_harmless() -> None:
    dedupe = Deduplicator()
    dedupe.remember("dev-1", digest(PAYLOAD))
    dedupe.remember("dev-1", digest(PAYLOAD))
    for i in range(WINDOW_PER_DEVICE - 1):
        dedupe.remember("dev-1", digest(b"%d" % i))
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is True


def test_the_oldest_device_is_forgotten_beyond_max_devices() -> None:
    dedupe = Deduplicator(max_devices=2)
    for device in ("dev-1", "dev-2", "dev-3"):
        dedupe.remember(device, digest(PAYLOAD))
    assert dedupe.is_duplicate("dev-1", digest(PAYLOAD), identifying=True) is False
    assert dedupe.is_duplicate("dev-3", digest(PAYLOAD), identifying=True) is True

"""Redelivered messages are recognised by (device, seq, device ts) or, without seq, by bytes."""

from __future__ import annotations

from ingest.dedupe import RECENT_DIGESTS, WINDOW_SEQ, Deduplicator, MessageId, digest

PAYLOAD = b'{"co_ppm": 3.5}'
T = 1_795_334_400_000  # device ts, epoch ms


def seq(n: int, ts_ms: int | None = None, *, power_on: bool = False) -> MessageId:
    return MessageId(n, ts_ms, power_on)


def dup(dedupe: Deduplicator, message: MessageId, *, flagged: bool = False, key: str = "d") -> bool:
    # The payload digest is not what identifies a message with seq: a different one each time.
    return dedupe.is_duplicate(
        key, digest(repr(message).encode()), flagged=flagged, message=message
    )


def bytes_dup(dedupe: Deduplicator, payload: bytes, *, flagged: bool, key: str = "d") -> bool:
    return dedupe.is_duplicate(key, digest(payload), flagged=flagged)


def test_digest_is_stable_and_tells_payloads_apart() -> None:
    assert digest(PAYLOAD) == digest(bytes(PAYLOAD))
    assert digest(PAYLOAD) != digest(PAYLOAD + b" ")
    assert 0 <= digest(b"") < 2**64


# --- messages with seq ---------------------------------------------------------------------------


def test_the_same_seq_and_ts_is_a_duplicate_whatever_the_bytes_and_flags() -> None:
    dedupe = Deduplicator()
    assert dup(dedupe, seq(1042, T)) is False
    assert dup(dedupe, seq(1042, T)) is True
    assert dup(dedupe, seq(1042, T), flagged=True) is True
    assert dup(dedupe, seq(1043, T + 1)) is False


def test_the_same_seq_without_ts_is_a_duplicate() -> None:
    dedupe = Deduplicator()
    assert dup(dedupe, seq(7)) is False
    assert dup(dedupe, seq(7)) is True


def test_the_same_seq_with_a_later_ts_is_a_new_message() -> None:
    # The first copy would have carried the same ts: a later one is another message.
    dedupe = Deduplicator()
    assert dup(dedupe, seq(7, T)) is False
    assert dup(dedupe, seq(8, T + 10)) is False
    assert dup(dedupe, seq(7, T + 60_000)) is False
    assert dup(dedupe, seq(7, T)) is True  # the first one again


def test_seqs_arriving_out_of_order_are_each_new_once() -> None:
    dedupe = Deduplicator()
    for n in (10, 14, 12, 11, 13):
        assert dup(dedupe, seq(n)) is False
    for n in (10, 11, 12, 13, 14):
        assert dup(dedupe, seq(n)) is True


def test_the_window_holds_64_seqs_below_the_highest() -> None:
    dedupe = Deduplicator()
    for n in range(100, 100 + WINDOW_SEQ + 1):
        assert dup(dedupe, seq(n)) is False
    high = 100 + WINDOW_SEQ
    assert dup(dedupe, seq(high - WINDOW_SEQ + 1)) is True  # the oldest one kept
    assert dup(dedupe, seq(high - WINDOW_SEQ)) is False  # forgotten: taken as new


def test_a_jump_beyond_the_window_forgets_the_old_seqs() -> None:
    dedupe = Deduplicator()
    assert dup(dedupe, seq(5)) is False
    assert dup(dedupe, seq(5 + WINDOW_SEQ)) is False
    assert dup(dedupe, seq(5 + WINDOW_SEQ)) is True
    assert dup(dedupe, seq(5)) is False


def test_a_power_on_starts_a_new_count_that_is_not_a_duplicate() -> None:
    dedupe = Deduplicator()
    for n in range(0, 20):
        dup(dedupe, seq(n, T + n))
    # Rebooted: power_on with seq 3, then 4, 5, … again, each with a new ts.
    assert dup(dedupe, seq(3, T + 1000, power_on=True)) is False
    for n in range(4, 20):
        assert dup(dedupe, seq(n, T + 1000 + n)) is False
    assert dup(dedupe, seq(3, T + 1000, power_on=True)) is True  # the power_on redelivered


def test_a_power_on_without_ts_is_new_unless_the_broker_flags_it() -> None:
    dedupe = Deduplicator()
    for n in range(0, 5):
        dup(dedupe, seq(n))
    assert dup(dedupe, seq(2, power_on=True)) is False
    assert dup(dedupe, seq(3)) is False  # counted anew: 3 of the new count, not the old one
    assert dup(dedupe, seq(2, power_on=True), flagged=True) is True


def test_seq_0_or_1_after_a_higher_one_is_a_restart_not_a_duplicate() -> None:
    dedupe = Deduplicator()
    for n in range(0, 10):
        dup(dedupe, seq(n))
    assert dup(dedupe, seq(1)) is False  # rebooted without a power_on, no ts
    assert dup(dedupe, seq(2)) is False
    assert dup(dedupe, seq(2)) is True
    for n in range(3, 10):
        dup(dedupe, seq(n))
    assert dup(dedupe, seq(0), flagged=True) is False  # 0 was not seen in this count
    assert dup(dedupe, seq(0), flagged=True) is True


def test_a_redelivered_seq_1_with_its_ts_is_still_a_duplicate() -> None:
    dedupe = Deduplicator()
    for n in range(1, 6):
        dup(dedupe, seq(n, T + n))
    assert dup(dedupe, seq(1, T + 1)) is True
    assert dup(dedupe, seq(1, T + 1), flagged=True) is True
    assert dup(dedupe, seq(1, T + 9)) is False  # a later ts: the device really restarted


def test_copies_of_the_count_before_a_restart_are_still_known() -> None:
    # A reconnect redelivers a group holding messages from both sides of a reboot, in order.
    dedupe = Deduplicator()
    for n in (40, 41, 43):
        dup(dedupe, seq(n, T + n))
    assert dup(dedupe, seq(0, T + 100, power_on=True)) is False
    assert dup(dedupe, seq(1, T + 101)) is False
    assert dup(dedupe, seq(41, T + 41), flagged=True) is True  # the old 41
    assert dup(dedupe, seq(0, T + 100, power_on=True), flagged=True) is True
    assert dup(dedupe, seq(42, T + 42)) is False  # the old count's 42 was never seen: late
    assert dup(dedupe, seq(2, T + 102)) is False  # the new count goes on
    assert dup(dedupe, seq(1, T + 101)) is True


def test_a_power_on_without_ts_still_separates_the_counts() -> None:
    # Firmware often sends power_on before its clock is set, then readings with ts.
    dedupe = Deduplicator()
    for n in (7, 8):
        dup(dedupe, seq(n, T + n))
    assert dup(dedupe, seq(0, power_on=True)) is False
    assert dup(dedupe, seq(1, T + 200)) is False
    assert dup(dedupe, seq(8, T + 8), flagged=True) is True
    assert dup(dedupe, seq(8, T + 208)) is False  # the new count's own 8


def test_devices_are_independent() -> None:
    dedupe = Deduplicator()
    assert dup(dedupe, seq(1, T), key="a") is False
    assert dup(dedupe, seq(1, T), key="b") is False
    assert dup(dedupe, seq(1, T), key="a") is True


# --- messages without seq ------------------------------------------------------------------------


def test_equal_bytes_are_a_duplicate_only_when_the_broker_flags_the_copy() -> None:
    dedupe = Deduplicator()
    assert bytes_dup(dedupe, b"online", flagged=False) is False
    assert bytes_dup(dedupe, b"online", flagged=False) is False  # a new "online" is possible
    assert bytes_dup(dedupe, b"online", flagged=True) is True  # DUP or retained replay
    assert bytes_dup(dedupe, b"offline", flagged=True) is False  # never seen: new


def test_the_last_few_payloads_are_remembered() -> None:
    dedupe = Deduplicator()
    bytes_dup(dedupe, b"first", flagged=False)
    for i in range(RECENT_DIGESTS - 1):
        bytes_dup(dedupe, b"%d" % i, flagged=False)
    assert bytes_dup(dedupe, b"first", flagged=True) is True  # the oldest one kept
    bytes_dup(dedupe, b"one more", flagged=False)
    assert bytes_dup(dedupe, b"first", flagged=True) is False  # pushed out


def test_a_repeated_payload_does_not_take_a_new_slot() -> None:
    dedupe = Deduplicator()
    bytes_dup(dedupe, b"first", flagged=False)
    for _ in range(RECENT_DIGESTS * 3):
        bytes_dup(dedupe, b"again", flagged=False)
    assert bytes_dup(dedupe, b"first", flagged=True) is True


def test_payloads_and_seqs_of_one_device_do_not_disturb_each_other() -> None:
    dedupe = Deduplicator()
    bytes_dup(dedupe, b"online", flagged=False)
    for n in range(200):
        dup(dedupe, seq(n, T + n))
    assert bytes_dup(dedupe, b"online", flagged=True) is True
    for i in range(RECENT_DIGESTS):
        bytes_dup(dedupe, b"%d" % i, flagged=False)
    assert dup(dedupe, seq(199, T + 199)) is True


# --- priming and bounds ---------------------------------------------------------------------------


def test_remember_primes_both_kinds() -> None:
    dedupe = Deduplicator()
    dedupe.remember("d", digest(b"online"))
    dedupe.remember("d", 0, seq(41, T))
    dedupe.remember("d", 0, seq(42, T + 1))
    assert bytes_dup(dedupe, b"online", flagged=True) is True
    assert bytes_dup(dedupe, b"online", flagged=False) is False
    assert dup(dedupe, seq(41, T)) is True
    assert dup(dedupe, seq(43, T + 2)) is False
    assert dup(dedupe, seq(41, T), key="other") is False


def test_remember_twice_is_harmless() -> None:
    dedupe = Deduplicator()
    for _ in range(2):
        dedupe.remember("d", digest(PAYLOAD))
        dedupe.remember("d", 0, seq(9, T))
    for i in range(RECENT_DIGESTS - 1):
        dedupe.remember("d", digest(b"%d" % i))
    assert bytes_dup(dedupe, PAYLOAD, flagged=True) is True
    assert dup(dedupe, seq(9, T)) is True


def test_the_first_devices_are_forgotten_beyond_max_devices() -> None:
    dedupe = Deduplicator(max_devices=2)
    for device in ("dev-1", "dev-2", "dev-3"):
        dedupe.remember(device, digest(PAYLOAD))
    assert len(dedupe) == 2
    assert bytes_dup(dedupe, PAYLOAD, flagged=True, key="dev-3") is True
    assert bytes_dup(dedupe, PAYLOAD, flagged=True, key="dev-1") is False


# --- receive stamps (kept in the same state) ---------------------------------------------------


def test_stamps_of_a_device_never_repeat_and_follow_the_receive_time() -> None:
    dedupe = Deduplicator()
    assert [dedupe.stamp("a", t) for t in (T, T, T, T + 1, T + 10)] == [
        T,
        T + 1,
        T + 2,
        T + 3,
        T + 10,
    ]
    assert dedupe.stamp("b", T) == T  # another device: its own
    assert dedupe.stamp("a", T - 5000) == T + 11  # the clock went back: still after the last


def test_a_remembered_stamp_is_not_given_again_and_identities_stay() -> None:
    dedupe = Deduplicator()
    dup(dedupe, seq(5, T))
    bytes_dup(dedupe, b"online", flagged=False)
    dedupe.remember_stamp("d", T + 7)
    dedupe.remember_stamp("d", T + 3)  # older: changes nothing
    assert dedupe.stamp("d", T + 7) == T + 8
    assert dup(dedupe, seq(5, T)) is True
    assert bytes_dup(dedupe, b"online", flagged=True) is True
    dup(dedupe, seq(6, T + 1))
    assert dedupe.stamp("d", T) == T + 9

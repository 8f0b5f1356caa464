"""The one back-off policy: doubling, capped, jittered, reset after success."""

from __future__ import annotations

import pytest

from core.retry import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(first=0.5, most=4.0, jitter=False)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.next() == 0.5


def test_jitter_keeps_each_delay_between_half_and_all_of_its_step() -> None:
    steps = [1.0, 2.0, 4.0, 8.0, 8.0]
    for _ in range(200):
        backoff = Backoff(first=1.0, most=8.0)
        for step in steps:
            assert step / 2 <= backoff.next() <= step


def test_jittered_delays_differ_so_clients_spread_out() -> None:
    delays = {Backoff(first=1.0, most=8.0).next() for _ in range(50)}
    assert len(delays) > 40


def test_many_attempts_do_not_overflow() -> None:
    backoff = Backoff(first=0.1, most=30.0, jitter=False)
    for _ in range(10_000):
        delay = backoff.next()
    assert delay == 30.0


@pytest.mark.parametrize(("first", "most"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_a_nonsensical_policy_is_refused(first: float, most: float) -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first=first, most=most)

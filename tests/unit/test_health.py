"""What /readyz reads: each component's state from its progress, backlog, errors, crashes."""

from __future__ import annotations

import pytest

from core.health import Component, Health, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_quiet_component_with_nothing_to_do_is_ok(clock: Clock) -> None:
    component = Component("clock", clock=clock, backlog=lambda: 0)
    clock.now += 3600
    assert component.state() == (State.OK, None)


def test_no_progress_while_work_waits_is_stuck(clock: Clock) -> None:
    waiting = [5]
    component = Component("digester", clock=clock, backlog=lambda: waiting[0])
    clock.now += 29
    assert component.state()[0] is State.OK
    clock.now += 2
    state, reason = component.state()
    assert state is State.STUCK and reason is not None and "5 wait" in reason
    component.progress()
    assert component.state()[0] is State.OK


def test_a_long_call_of_its_own_is_stuck_but_an_outside_one_only_degrades(clock: Clock) -> None:
    own = Component("journal", clock=clock)
    outside = Component("alerts-sql", clock=clock, depends_on="the database")
    own.busy()
    outside.busy()
    clock.now += 31
    assert own.state()[0] is State.STUCK
    state, reason = outside.state()
    assert state is State.DEGRADED and reason == "the database has not answered for 31 s"
    outside.idle()
    assert outside.state()[0] is State.OK


def test_a_failed_attempt_degrades_until_the_next_progress(clock: Clock) -> None:
    component = Component("forwarder", clock=clock, depends_on="the time-series store")
    component.failing("connection refused")
    assert component.state() == (State.DEGRADED, "connection refused")
    component.progress()
    assert component.state() == (State.OK, None)


def test_a_crash_or_a_fault_of_its_own_is_failed(clock: Clock) -> None:
    component = Component("edge", clock=clock)
    component.crash("exited with -9")
    assert component.state() == (State.FAILED, "exited with -9") and component.crashes == 1
    component.progress()
    component.fault("the raw spool cannot be written: disk full")
    assert component.state()[0] is State.FAILED
    component.progress()
    assert component.state()[0] is State.OK


def test_the_service_is_unready_when_any_part_is_stuck_or_failed(clock: Clock) -> None:
    health = Health()
    forwarder = health.component("forwarder", clock=clock, depends_on="the store")
    edge = health.add(Component("edge", clock=clock))
    assert health.report()[:2] == (True, "ok")
    forwarder.failing("HTTP 503")
    ready, status, reports = health.report()
    assert (ready, status) == (True, "degraded"), "an outside outage is ridden out"
    assert reports["forwarder"]["reason"] == "HTTP 503"
    edge.crash("exited with 1")
    ready, status, reports = health.report()
    assert (ready, status) == (False, "unready")
    assert reports["edge"] == {
        "state": "failed",
        "last_progress_s": 0.0,
        "backlog": 0,
        "reason": "exited with 1",
        "crashes": 1,
    }
    with pytest.raises(ValueError, match="already"):
        health.add(Component("edge"))

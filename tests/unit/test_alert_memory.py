"""The engine keeps rule state only for devices whose state is not the default, and loses none."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.alerting import AlertKind, AlertState
from core.models import DeviceKind, EventType
from tests.unit.alert_helpers import Harness

QUIET = [f"smoke-{i:03d}" for i in range(50)]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    for device in [*QUIET, "busy"]:
        harness.registry.add(device, DeviceKind.SMOKE)
    harness.engine.load()
    return harness


def kept(h: Harness) -> int:
    return int(h.engine.stats()["devices"])


def test_devices_whose_rules_remember_nothing_cost_no_state(h: Harness) -> None:
    for device in QUIET:
        h.reading(device, smoke_db_m=0.01, battery_pct=90)
        h.status(device, online=True)
    assert kept(h) <= 1  # at most the one handed out last, looked at on the next message


def test_a_state_that_leaves_the_default_is_kept_between_other_devices_messages(
    h: Harness,
) -> None:
    h.reading("busy", smoke_db_m=0.3)  # a streak of 1: not yet an alarm
    for device in QUIET:
        h.reading(device, smoke_db_m=0.01)
    assert kept(h) >= 1
    h.reading("busy", smoke_db_m=0.3)  # the second in a row: the streak was remembered
    assert h.one(AlertKind.SMOKE_ALARM).device == "busy"
    h.reading("busy", smoke_db_m=0.01)  # clears, and the state is the default again
    h.reading(QUIET[0], smoke_db_m=0.01)
    assert h.one(AlertKind.SMOKE_ALARM).state is AlertState.CLEARED
    assert kept(h) <= 1


def test_a_test_button_window_is_remembered_while_others_talk(h: Harness) -> None:
    h.event("busy", EventType.TEST)
    for device in QUIET:
        h.reading(device, smoke_db_m=0.01)
    h.reading("busy", alarm=True)
    assert h.open(AlertKind.SMOKE_ALARM) == []  # recorded, not raised: still in the window

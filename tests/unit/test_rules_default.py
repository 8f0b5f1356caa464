"""A device's rule state is its default when it remembers nothing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from alerts.rules import SMOKE, DeviceRules
from core.models import DeviceKind


@pytest.mark.parametrize(
    "change",
    [
        {"own_alarm": frozenset({SMOKE})},
        {"smoke_streak": 1},
        {"smoke_high": True},
        {"gas_level": 1},
        {"co_high": True},
        {"battery_low": True},
        {"faults": frozenset({SMOKE})},
        {"test_until": datetime(2026, 12, 2, tzinfo=UTC)},
        {"suppressed": frozenset({SMOKE})},
    ],
)
def test_any_memory_is_not_the_default(change: dict[str, Any]) -> None:
    fresh = DeviceRules(DeviceKind.SMOKE, {})
    assert fresh.is_default()
    for name, value in change.items():
        setattr(fresh, name, value)
    assert not fresh.is_default()


def test_every_field_that_remembers_is_checked() -> None:
    """A field added to DeviceRules must be added to is_default (and to the cases above)."""
    remembered = {f.name for f in dataclasses.fields(DeviceRules)} - {"kind", "thresholds"}
    assert remembered == {
        "own_alarm",
        "smoke_streak",
        "smoke_high",
        "gas_level",
        "co_high",
        "battery_low",
        "faults",
        "test_until",
        "suppressed",
    }

"""Every rule of the alert engine, with its edge cases, on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.alerting import AlertAction, AlertKind, AlertState, Severity
from core.models import DeviceKind, EventSource, EventType, FaultCode
from core.settings import AlertSettings
from tests.unit.alert_helpers import Harness

A = AlertAction


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    harness.registry.add("smoke-1", DeviceKind.SMOKE)
    harness.registry.add("smoke-2", DeviceKind.SMOKE)
    harness.registry.add("smoke-3", DeviceKind.SMOKE, zone="B")
    harness.registry.add("gas-1", DeviceKind.GAS)
    harness.registry.add("co-1", DeviceKind.CO)
    harness.engine.load()
    return harness


# --- smoke ----------------------------------------------------------------------------------


def test_smoke_alarm_needs_n_consecutive_readings(h: Harness) -> None:
    h.reading("smoke-1", smoke_db_m=0.2)
    assert h.open(AlertKind.SMOKE_ALARM) == []
    h.reading("smoke-1", smoke_db_m=0.05)  # the streak is broken
    h.reading("smoke-1", smoke_db_m=0.2)
    assert h.open(AlertKind.SMOKE_ALARM) == []
    h.reading("smoke-1", smoke_db_m=0.3)
    alert = h.one(AlertKind.SMOKE_ALARM)
    assert (alert.severity, alert.state, alert.value) == (Severity.CRITICAL, AlertState.ACTIVE, 0.3)


def test_smoke_threshold_from_the_registry_wins(h: Harness) -> None:
    h.registry.add("smoke-9", DeviceKind.SMOKE, thresholds={"smoke_db_m": 0.5})
    for _ in range(3):
        h.reading("smoke-9", smoke_db_m=0.3)
    assert h.open(AlertKind.SMOKE_ALARM) == []
    h.reading("smoke-9", smoke_db_m=0.6)
    h.reading("smoke-9", smoke_db_m=0.6)
    assert h.one(AlertKind.SMOKE_ALARM).device == "smoke-9"


def test_own_alarm_flag_and_event_raise_at_once_and_clear(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    alert = h.one(AlertKind.SMOKE_ALARM)
    h.reading("smoke-1", alarm=False)
    assert h.one(AlertKind.SMOKE_ALARM).state is AlertState.CLEARED  # stays on the board
    h.event("smoke-1", EventType.ALARM, source=EventSource.SMOKE)
    again = h.one(AlertKind.SMOKE_ALARM)
    assert (again.id, again.state, again.count) == (alert.id, AlertState.ACTIVE, 2)
    assert h.writer.actions(AlertKind.SMOKE_ALARM) == [
        ("smoke_alarm", A.RAISED),
        ("smoke_alarm", A.CLEARED),
        ("smoke_alarm", A.REACTIVATED),
    ]


def test_repeat_updates_the_open_alert_instead_of_opening_another(h: Harness) -> None:
    for value in (0.2, 0.3, 0.4, 0.5):
        h.reading("smoke-1", smoke_db_m=value)
    alert = h.one(AlertKind.SMOKE_ALARM)
    assert (alert.count, alert.value) == (3, 0.5)


def test_smoke_hysteresis_holds_between_clear_point_and_threshold(h: Harness) -> None:
    h.reading("smoke-1", smoke_db_m=0.2)
    h.reading("smoke-1", smoke_db_m=0.2)
    h.reading("smoke-1", smoke_db_m=0.13)  # below 0.15 but above 0.15 × 0.8
    assert h.one(AlertKind.SMOKE_ALARM).state is AlertState.ACTIVE
    h.reading("smoke-1", smoke_db_m=0.1)
    assert h.one(AlertKind.SMOKE_ALARM).state is AlertState.CLEARED


# --- gas ------------------------------------------------------------------------------------


def test_gas_ramp_goes_major_critical_major_cleared(h: Harness) -> None:
    for value in (5, 26, 30, 51, 60, 44, 30, 10):
        h.reading("gas-1", gas_lel_pct=value)
    severities = [c.alert.severity for _, c in h.writer.changes if c.action is not A.REPEATED]
    actions = [a for _, a in h.writer.actions(AlertKind.GAS_LEAK) if a is not A.REPEATED]
    assert actions == [A.RAISED, A.SEVERITY, A.SEVERITY, A.CLEARED]
    assert severities == [Severity.MAJOR, Severity.CRITICAL, Severity.MAJOR, Severity.MAJOR]
    assert h.one(AlertKind.GAS_LEAK).state is AlertState.CLEARED


def test_gas_hovering_at_a_threshold_does_not_flap(h: Harness) -> None:
    for value in (25, 24, 25.5, 23, 24.9, 22, 26):
        h.reading("gas-1", gas_lel_pct=value)
    assert h.writer.actions(AlertKind.GAS_LEAK)[0] == ("gas_leak", A.RAISED)
    assert ("gas_leak", A.CLEARED) not in h.writer.actions(AlertKind.GAS_LEAK)
    for value in (50, 47, 50.5, 46):
        h.reading("gas-1", gas_lel_pct=value)
    severity_changes = [a for _, a in h.writer.actions(AlertKind.GAS_LEAK) if a is A.SEVERITY]
    assert severity_changes == [A.SEVERITY]  # up once, not back down within the band
    h.reading("gas-1", gas_lel_pct=19.9)
    assert h.one(AlertKind.GAS_LEAK).state is AlertState.CLEARED


# --- CO, battery, faults, tamper --------------------------------------------------------------


def test_co_alarm_with_a_configurable_threshold(tmp_path: Path) -> None:
    h = Harness(tmp_path, AlertSettings(co_ppm=100))
    h.registry.add("co-1", DeviceKind.CO)
    h.reading("co-1", co_ppm=80)
    assert h.open(AlertKind.CO_ALARM) == []
    h.reading("co-1", co_ppm=120)
    assert h.one(AlertKind.CO_ALARM).severity is Severity.CRITICAL
    h.reading("co-1", co_ppm=85)  # above 100 × 0.8: still in alarm
    assert h.one(AlertKind.CO_ALARM).state is AlertState.ACTIVE
    h.reading("co-1", co_ppm=10)
    assert h.one(AlertKind.CO_ALARM).state is AlertState.CLEARED


def test_low_battery_by_reading_and_by_event_with_hysteresis(h: Harness) -> None:
    h.reading("smoke-1", battery_pct=21)
    assert h.open(AlertKind.LOW_BATTERY) == []
    h.reading("smoke-1", battery_pct=20)
    assert h.one(AlertKind.LOW_BATTERY).severity is Severity.MINOR
    h.reading("smoke-1", battery_pct=23)  # a wobble, not a new battery
    assert h.one(AlertKind.LOW_BATTERY).state is AlertState.ACTIVE
    h.reading("smoke-1", battery_pct=100)
    assert h.one(AlertKind.LOW_BATTERY).state is AlertState.CLEARED
    h.event("smoke-2", EventType.BATTERY_LOW)
    assert h.one(AlertKind.LOW_BATTERY, "smoke-2").state is AlertState.ACTIVE


def test_one_device_fault_per_active_code_and_the_faults_list_clears(h: Harness) -> None:
    h.reading("smoke-1", faults=["sensor_fault", "chamber_dirty"])
    codes = sorted(a.code for a in h.open(AlertKind.DEVICE_FAULT))
    assert codes == ["chamber_dirty", "sensor_fault"]
    h.reading("smoke-1", battery_pct=90)  # no `faults` key: says nothing about faults
    assert all(a.state is AlertState.ACTIVE for a in h.open(AlertKind.DEVICE_FAULT))
    h.reading("smoke-1", faults=["chamber_dirty"])
    states = {a.code: a.state for a in h.open(AlertKind.DEVICE_FAULT)}
    assert states == {"chamber_dirty": AlertState.ACTIVE, "sensor_fault": AlertState.CLEARED}


def test_fault_events_and_tamper(h: Harness) -> None:
    h.event("gas-1", EventType.FAULT, code=FaultCode.VALVE_FAULT)
    assert h.one(AlertKind.DEVICE_FAULT).code == "valve_fault"
    h.event("gas-1", EventType.FAULT_CLEAR, code=FaultCode.VALVE_FAULT)
    assert h.one(AlertKind.DEVICE_FAULT).state is AlertState.CLEARED
    h.event("gas-1", EventType.TAMPER)
    assert h.one(AlertKind.TAMPER).severity is Severity.MAJOR
    h.event("gas-1", EventType.TAMPER_CLEAR)
    assert h.one(AlertKind.TAMPER).state is AlertState.CLEARED
    h.reading("gas-1", faults=["tamper", "low_battery"])  # codes with kinds of their own
    assert h.one(AlertKind.TAMPER).state is AlertState.ACTIVE
    assert h.one(AlertKind.LOW_BATTERY).state is AlertState.ACTIVE


# --- offline ----------------------------------------------------------------------------------


def test_offline_status_and_last_will_and_back_online(h: Harness) -> None:
    h.status("smoke-1", online=False, retained=True)
    alert = h.one(AlertKind.DEVICE_OFFLINE)
    assert alert.severity is Severity.MAJOR and "last will" in alert.detail
    h.status("smoke-1", online=True)
    assert h.one(AlertKind.DEVICE_OFFLINE).state is AlertState.CLEARED


def test_silence_fires_on_time_and_any_message_clears(h: Harness) -> None:
    h.reading("smoke-1", smoke_db_m=0.01)  # heartbeat 60 s: window 150 s
    h.advance(149)
    h.engine.tick()
    assert h.open(AlertKind.DEVICE_OFFLINE) == []
    h.advance(1)
    h.engine.tick()
    alert = h.one(AlertKind.DEVICE_OFFLINE)
    assert "silent for 150 s" in alert.detail
    h.advance(60)
    h.engine.tick()
    assert h.one(AlertKind.DEVICE_OFFLINE).count == 1  # reported once per silence
    h.reading("smoke-1", smoke_db_m=0.01)
    assert h.one(AlertKind.DEVICE_OFFLINE).state is AlertState.CLEARED


def test_status_heartbeat_changes_the_silence_window(h: Harness) -> None:
    from core.models import Status
    from tests.unit.alert_helpers import INSTITUTION

    h.send(
        Status(
            institution=INSTITUTION, device="smoke-1", ts=h.clock.now(), online=True, heartbeat_s=10
        )
    )
    h.advance(25)
    h.engine.tick()
    assert h.one(AlertKind.DEVICE_OFFLINE).device == "smoke-1"


def test_silence_is_measured_from_the_last_message_across_a_restart(
    h: Harness, tmp_path: Path
) -> None:
    h.reading("smoke-1", smoke_db_m=0.01)
    snapshot = tmp_path / "seen.bin"
    h.engine.watch.save(snapshot)
    h.advance(100)  # down for 100 s
    h.engine = h._engine()
    h.engine.load(snapshot=snapshot)
    h.advance(49)
    h.engine.tick()
    assert h.open(AlertKind.DEVICE_OFFLINE) == []
    h.advance(1)
    h.engine.tick()
    assert h.one(AlertKind.DEVICE_OFFLINE).device == "smoke-1"


# --- test button, hush --------------------------------------------------------------------------


def test_test_button_window_records_but_does_not_raise(h: Harness) -> None:
    h.event("smoke-1", EventType.TEST)
    h.reading("smoke-1", alarm=True)
    h.reading("smoke-1", alarm=True)
    assert h.open(AlertKind.SMOKE_ALARM) == []
    suppressed = [c for _, c in h.writer.changes if c.action is A.SUPPRESSED]
    assert len(suppressed) == 1 and suppressed[0].alert.state is AlertState.RESOLVED
    assert h.store.get(suppressed[0].alert.id) is not None  # recorded
    h.reading("smoke-1", alarm=False)
    h.advance(601)
    h.reading("smoke-1", alarm=True)  # the window is over
    assert h.one(AlertKind.SMOKE_ALARM).state is AlertState.ACTIVE


def test_test_window_does_not_hide_an_alarm_already_raised(h: Harness) -> None:
    h.reading("gas-1", gas_lel_pct=30)
    h.event("gas-1", EventType.TEST)
    h.reading("gas-1", gas_lel_pct=55)
    assert h.one(AlertKind.GAS_LEAK).severity is Severity.CRITICAL


def test_hush_is_recorded_on_the_alert(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    h.event("smoke-1", EventType.HUSH, source=EventSource.SMOKE)
    alert = h.one(AlertKind.SMOKE_ALARM)
    assert alert.hushed_at == h.clock.now() and alert.state is AlertState.ACTIVE
    assert [e.action for e in h.store.history(alert.id)] == [A.RAISED, A.HUSHED]


# --- zones, nuisance ----------------------------------------------------------------------------


def test_two_detectors_of_a_zone_within_the_window_confirm_a_fire(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    h.reading("smoke-3", alarm=True)  # another zone
    assert h.open(AlertKind.FIRE_CONFIRMED) == []
    h.advance(60)
    h.reading("smoke-2", alarm=True)
    fire = h.one(AlertKind.FIRE_CONFIRMED)
    assert (fire.severity, fire.device, fire.zone) == (Severity.CRITICAL, "smoke-2", "A")
    assert h.one(AlertKind.SMOKE_ALARM, "smoke-1").confirmed
    assert not h.one(AlertKind.SMOKE_ALARM, "smoke-3").confirmed
    h.reading("smoke-1", alarm=False)
    assert h.one(AlertKind.FIRE_CONFIRMED).state is AlertState.ACTIVE  # smoke-2 still alarms
    h.reading("smoke-2", alarm=False)
    assert h.one(AlertKind.FIRE_CONFIRMED).state is AlertState.CLEARED


def test_alarms_further_apart_than_the_window_do_not_confirm(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    h.advance(121)
    h.reading("smoke-2", alarm=True)
    assert h.open(AlertKind.FIRE_CONFIRMED) == []


def test_six_unconfirmed_alarms_in_a_day_are_a_nuisance_fault(h: Harness) -> None:
    for _ in range(5):
        h.reading("smoke-1", alarm=True)
        h.reading("smoke-1", alarm=False)
        h.advance(3600)
    assert h.open(AlertKind.DEVICE_FAULT) == []
    h.reading("smoke-1", alarm=True)
    h.reading("smoke-1", alarm=False)
    fault = h.one(AlertKind.DEVICE_FAULT)
    assert (fault.code, fault.severity) == ("nuisance_alarms", Severity.MAJOR)


def test_alarms_older_than_a_day_do_not_count_as_nuisance(h: Harness) -> None:
    for _ in range(6):
        h.reading("smoke-1", alarm=True)
        h.reading("smoke-1", alarm=False)
        h.advance(5 * 3600)
    assert h.open(AlertKind.DEVICE_FAULT) == []


# --- order, duplicates, restart -----------------------------------------------------------------


def test_an_older_message_cannot_undo_a_newer_change(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    h.reading("smoke-1", alarm=False, ts=h.earlier(30))  # sent before the alarm, arrived after
    assert h.one(AlertKind.SMOKE_ALARM).state is AlertState.ACTIVE


def test_a_message_evaluated_before_a_crash_changes_nothing_the_second_time(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    lsn = h.lsn
    h.restart()
    from core.models import Telemetry
    from tests.unit.alert_helpers import INSTITUTION

    h.send(
        Telemetry(institution=INSTITUTION, device="smoke-1", ts=h.clock.now(), alarm=True),
        lsn=lsn,
    )
    assert h.one(AlertKind.SMOKE_ALARM).count == 1


def test_a_restart_rebuilds_open_alerts_without_flapping(h: Harness) -> None:
    h.reading("smoke-1", smoke_db_m=0.3)
    h.reading("smoke-1", smoke_db_m=0.3)
    h.reading("gas-1", gas_lel_pct=55)
    before = {a.id for a in h.engine.open_alerts()}
    h.restart()
    assert {a.id for a in h.engine.open_alerts()} == before
    h.writer.take()
    h.reading("smoke-1", smoke_db_m=0.3)  # one high reading: still the same alarm
    h.reading("gas-1", gas_lel_pct=48)  # within the hysteresis band of level 2
    assert [a for _, a in h.writer.actions()] == [A.REPEATED, A.REPEATED]


# --- people ---------------------------------------------------------------------------------


def test_acknowledge_then_condition_clears_resolves(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    alert = h.one(AlertKind.SMOKE_ALARM)
    acked = h.engine.acknowledge(alert.id, "duty-zhang", "called the home")
    assert (acked.state, acked.acknowledged_by, acked.note) == (
        AlertState.ACKNOWLEDGED,
        "duty-zhang",
        "called the home",
    )
    h.reading("smoke-1", alarm=False)
    stored = h.store.get(alert.id)
    assert stored is not None and stored.state is AlertState.RESOLVED
    assert stored.resolved_by == "system"
    assert h.open(AlertKind.SMOKE_ALARM) == []


def test_acknowledging_a_cleared_alarm_takes_it_off_the_board(h: Harness) -> None:
    h.reading("smoke-1", alarm=True)
    h.reading("smoke-1", alarm=False)
    alert = h.one(AlertKind.SMOKE_ALARM)
    done = h.engine.acknowledge(alert.id, "duty-li")
    assert done.state is AlertState.RESOLVED and done.acknowledged_by == "duty-li"
    actions = [e.action for e in h.store.history(alert.id)]
    assert actions == [A.RAISED, A.CLEARED, A.ACKNOWLEDGED, A.RESOLVED]


def test_refused_transitions(h: Harness) -> None:
    from core.errors import InvalidTransitionError

    h.reading("smoke-1", alarm=True)
    alert = h.one(AlertKind.SMOKE_ALARM)
    with pytest.raises(InvalidTransitionError, match="acknowledge it first"):
        h.engine.resolve(alert.id, "duty-li")
    h.engine.acknowledge(alert.id, "duty-li")
    with pytest.raises(InvalidTransitionError, match="acknowledged by duty-li"):
        h.engine.acknowledge(alert.id, "duty-wang")
    h.engine.resolve(alert.id, "duty-li", "false alarm: cooking")
    with pytest.raises(InvalidTransitionError, match="resolved"):
        h.engine.acknowledge(alert.id, "duty-li")
    # Under the engine's lock nothing asks the database (the API tells unknown from resolved
    # before): an alert not on the board is refused as such.
    with pytest.raises(InvalidTransitionError, match="not open"):
        h.engine.acknowledge("nope", "duty-li")
    assert h.engine.open_alert(alert.id) is None and h.engine.get(alert.id) is not None


def test_unacknowledged_critical_alert_escalates_each_interval_until_acknowledged(
    h: Harness,
) -> None:
    h.reading("gas-1", gas_lel_pct=60)
    h.reading("co-1", battery_pct=5)  # minor: never escalates
    for _ in range(3):
        h.advance(300)
        h.engine.tick()
    gas = h.one(AlertKind.GAS_LEAK)
    assert (gas.escalations, gas.escalation_level) == (3, 3)
    assert h.one(AlertKind.LOW_BATTERY).escalations == 0
    h.advance(300)
    h.engine.tick()
    assert h.one(AlertKind.GAS_LEAK).escalation_level == 3  # the top of the chain
    h.engine.acknowledge(gas.id, "duty-li")
    h.advance(3000)
    h.engine.tick()
    assert h.one(AlertKind.GAS_LEAK).escalations == 4


def test_the_silence_watch_reports_within_its_resolution_of_the_deadline() -> None:
    """Deadlines are not rounded up to whole seconds: never early, at most 0.05 s late."""
    from alerts.offline import OfflineWatch

    watch = OfflineWatch(lambda _device: 5.0, resolution_s=0.05)
    start = 1_795_000_000.32
    watch.seen("a", start)
    watch.seen("b", start + 0.37)
    assert watch.due(start + 4.999) == []
    (found,) = watch.due(start + 5.05)
    assert found[0] == "a" and 5.0 <= found[1] <= 5.051
    assert watch.due(start + 5.369) == []
    (found,) = watch.due(start + 5.42)
    assert found[0] == "b" and 5.0 <= found[1] <= 5.051
    watch.seen("a", start + 6)  # back, then silent again
    assert watch.due(start + 10.999) == []
    assert [d for d, _ in watch.due(start + 11.05)] == ["a"]


def test_the_silence_watch_refiles_a_device_that_spoke_meanwhile() -> None:
    from alerts.offline import OfflineWatch

    watch = OfflineWatch(lambda _device: 5.0)
    watch.seen("a", 100.0)
    watch.seen("a", 103.0)  # filed at 105; its real deadline is 108
    assert watch.due(105.5) == []
    assert watch.due(107.99) == []
    assert [d for d, _ in watch.due(108.0)] == ["a"]
    assert watch.due(200.0) == [], "reported once per silence"

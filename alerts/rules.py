"""The rules: what one device's messages say about its alarm conditions.

Each message informs some conditions (a gas reading says nothing about the battery); for each
informed condition the rules say whether it holds now, how severe it is and why. Keeping
alerts in step with that is the engine's work (alerts/engine.py); rules know no alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.alerting import AlertKind, Severity
from core.models import (
    DeviceKind,
    DeviceMessage,
    Event,
    EventSource,
    EventType,
    FaultCode,
    Status,
    Telemetry,
)
from core.settings import AlertSettings

# A condition of one device: (kind, code). The code tells fault codes apart; "" otherwise.
Key = tuple[AlertKind, str]

SMOKE: Key = (AlertKind.SMOKE_ALARM, "")
GAS: Key = (AlertKind.GAS_LEAK, "")
CO: Key = (AlertKind.CO_ALARM, "")
OFFLINE: Key = (AlertKind.DEVICE_OFFLINE, "")
BATTERY: Key = (AlertKind.LOW_BATTERY, "")
TAMPER: Key = (AlertKind.TAMPER, "")
# Alarm conditions that a test-button press produces; they are recorded, not raised.
TESTABLE = frozenset({SMOKE, GAS, CO})
# Fault codes that have an alert kind of their own.
_FAULT_KEYS: dict[FaultCode, Key] = {FaultCode.LOW_BATTERY: BATTERY, FaultCode.TAMPER: TAMPER}
_SOURCE_KEYS: dict[EventSource, Key] = {
    EventSource.SMOKE: SMOKE,
    EventSource.GAS: GAS,
    EventSource.CO: CO,
}
# Which alarm the device's own `alarm` output means, by kind of device.
_OWN_ALARM_KEYS: dict[DeviceKind, Key] = {
    DeviceKind.SMOKE: SMOKE,
    DeviceKind.GAS: GAS,
    DeviceKind.CO: CO,
    DeviceKind.MULTI: SMOKE,
}


def fault_key(code: str) -> Key:
    """The condition a fault code raises."""
    try:
        return _FAULT_KEYS.get(FaultCode(code), (AlertKind.DEVICE_FAULT, code))
    except ValueError:
        return (AlertKind.DEVICE_FAULT, code)


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition that holds: how severe, the value that shows it, and why."""

    severity: Severity
    detail: str
    value: float | None = None


Findings = dict[Key, Condition | None]  # None: the condition does not hold


@dataclass(slots=True)
class DeviceRules:
    """What the rules remember of one device between its messages."""

    kind: DeviceKind
    thresholds: Mapping[str, float]
    # Frozen sets, replaced on change (rare): one shared empty set for 100,000 quiet devices.
    own_alarm: frozenset[Key] = frozenset()  # the device's own alarm output
    smoke_streak: int = 0
    smoke_high: bool = False
    gas_level: int = 0
    co_high: bool = False
    battery_low: bool = False
    faults: frozenset[Key] = frozenset()
    test_until: datetime | None = None
    suppressed: frozenset[Key] = frozenset()  # alarms recorded in the current test window

    def in_test(self, at: datetime) -> bool:
        """True within the test-button window."""
        return self.test_until is not None and at <= self.test_until

    def is_default(self) -> bool:
        """True when it remembers nothing a fresh state would not (checked for every message:
        attribute tests, no comparison object)."""
        return not (
            self.own_alarm
            or self.smoke_streak
            or self.smoke_high
            or self.gas_level
            or self.co_high
            or self.battery_low
            or self.faults
            or self.test_until is not None
            or self.suppressed
        )


class Rules:
    """Evaluates messages against the configured thresholds."""

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings

    def observe(self, state: DeviceRules, message: DeviceMessage) -> Findings:
        """Update the device's state from one message; return the conditions it informs."""
        if isinstance(message, Telemetry):
            return self._telemetry(state, message)
        if isinstance(message, Event):
            return self._event(state, message)
        return self._status(message)

    def _threshold(self, state: DeviceRules, name: str, default: float) -> float:
        return state.thresholds.get(name, default)

    def _telemetry(self, state: DeviceRules, message: Telemetry) -> Findings:
        found: Findings = {OFFLINE: None}
        own = _OWN_ALARM_KEYS[state.kind]
        if message.alarm is not None:
            state.own_alarm = state.own_alarm | {own} if message.alarm else state.own_alarm - {own}
        told = own if message.alarm is not None else None
        if message.smoke_db_m is not None or told == SMOKE:
            found[SMOKE] = self._smoke(state, message.smoke_db_m)
        if message.gas_lel_pct is not None or told == GAS:
            found[GAS] = self._gas(state, message.gas_lel_pct)
        if message.co_ppm is not None or told == CO:
            found[CO] = self._co(state, message.co_ppm)
        if message.battery_pct is not None:
            found[BATTERY] = self._battery(state, message.battery_pct)
        if message.faults is not None:
            self._faults(state, message.faults, found)
        return found

    def _smoke(self, state: DeviceRules, value: float | None) -> Condition | None:
        s = self.settings
        threshold = self._threshold(state, "smoke_db_m", s.smoke_db_m)
        if value is not None:
            state.smoke_streak = state.smoke_streak + 1 if value >= threshold else 0
            if state.smoke_streak >= s.smoke_readings:
                state.smoke_high = True
            elif value < threshold * s.clear_ratio:
                state.smoke_high = False
        if SMOKE in state.own_alarm:
            return Condition(Severity.CRITICAL, "the detector is in alarm", value)
        if state.smoke_high:
            detail = f"smoke {value} dB/m ≥ {threshold} dB/m"
            return Condition(Severity.CRITICAL, detail, value)
        return None

    def _gas(self, state: DeviceRules, value: float | None) -> Condition | None:
        # GB/T 50493-2019 5.5.2: level 1 at 25 %LEL, level 2 at 50 %LEL (the defaults).
        s = self.settings
        first = self._threshold(state, "gas_lel_pct", s.gas_major_lel_pct)
        second = self._threshold(state, "gas_lel_pct_critical", s.gas_critical_lel_pct)
        if value is not None:
            h, level = s.gas_hysteresis_lel_pct, state.gas_level
            if value >= second or (level == 2 and value >= second - h):
                level = 2
            elif value >= first or (level >= 1 and value >= first - h):
                level = 1
            else:
                level = 0
            state.gas_level = level
        level = max(state.gas_level, 1 if GAS in state.own_alarm else 0)
        if level == 0:
            return None
        severity = Severity.CRITICAL if level == 2 else Severity.MAJOR
        if value is None:
            return Condition(severity, "the gas detector is in alarm", value)
        return Condition(severity, f"gas {value} %LEL, level {level}", value)

    def _co(self, state: DeviceRules, value: float | None) -> Condition | None:
        s = self.settings
        threshold = self._threshold(state, "co_ppm", s.co_ppm)
        if value is not None:
            if value >= threshold:
                state.co_high = True
            elif value < threshold * s.clear_ratio:
                state.co_high = False
        if CO in state.own_alarm:
            return Condition(Severity.CRITICAL, "the CO detector is in alarm", value)
        if state.co_high:
            return Condition(Severity.CRITICAL, f"CO {value} ppm ≥ {threshold} ppm", value)
        return None

    def _battery(self, state: DeviceRules, value: float) -> Condition | None:
        s = self.settings
        threshold = self._threshold(state, "battery_pct", s.battery_pct)
        if value <= threshold:
            state.battery_low = True
        elif value > threshold + s.battery_hysteresis_pct:
            state.battery_low = False  # replaced or recharged, not a wobble at the threshold
        if state.battery_low:
            return Condition(Severity.MINOR, f"battery {value:g} % ≤ {threshold:g} %", value)
        return None

    def _faults(self, state: DeviceRules, codes: tuple[FaultCode, ...], found: Findings) -> None:
        """`faults` lists the faults active now: the others have cleared."""
        now = {fault_key(code) for code in codes}
        for key in state.faults | now:
            found[key] = _fault_condition(key) if key in now else None
        if BATTERY in now:  # a reported low-battery fault holds until the battery says otherwise
            state.battery_low = True
        state.faults = frozenset(now)

    def _event(self, state: DeviceRules, event: Event) -> Findings:
        found: Findings = {OFFLINE: None}
        kind = event.type
        if kind in (EventType.ALARM, EventType.ALARM_CLEAR):
            key = _SOURCE_KEYS[event.source] if event.source else _OWN_ALARM_KEYS[state.kind]
            on = kind is EventType.ALARM
            state.own_alarm = state.own_alarm | {key} if on else state.own_alarm - {key}
            found[key] = {SMOKE: self._smoke, GAS: self._gas, CO: self._co}[key](state, None)
        elif kind in (EventType.FAULT, EventType.FAULT_CLEAR):
            key = fault_key(event.code or FaultCode.OTHER)
            if kind is EventType.FAULT:
                state.faults = state.faults | {key}
                found[key] = _fault_condition(key, event.detail)
            else:
                state.faults = state.faults - {key}
                found[key] = None
        elif kind in (EventType.TAMPER, EventType.TAMPER_CLEAR):
            found[TAMPER] = (
                _fault_condition(TAMPER, event.detail) if kind is EventType.TAMPER else None
            )
        elif kind is EventType.BATTERY_LOW:
            state.battery_low = True
            found[BATTERY] = Condition(Severity.MINOR, event.detail or "battery low (device)")
        elif kind is EventType.TEST:
            state.test_until = event.ts + timedelta(seconds=self.settings.test_window_s)
            state.suppressed = frozenset()
        return found

    def _status(self, status: Status) -> Findings:
        if status.online:
            return {OFFLINE: None}
        how = "last will or offline status" if status.retained else "offline status"
        return {OFFLINE: Condition(Severity.MAJOR, f"the device reported itself offline ({how})")}


def _fault_condition(key: Key, detail: str | None = None) -> Condition:
    kind, code = key
    if kind is AlertKind.LOW_BATTERY:
        return Condition(Severity.MINOR, detail or "battery low (fault code)")
    if kind is AlertKind.TAMPER:
        return Condition(Severity.MAJOR, detail or "the device was tampered with")
    return Condition(Severity.MAJOR, detail or f"fault {code}")

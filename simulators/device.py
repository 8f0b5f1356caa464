"""One simulated detector: drifting readings, occasional events, and scenarios to trigger."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from core.models import Channel, DeviceKind, EventSource, EventType, FaultCode
from simulators.payloads import (
    DEFAULT_PREFIX,
    OFFLINE,
    Outgoing,
    TsStyle,
    device_ts,
    encode,
    event_payload,
    status_payload,
    telemetry_payload,
    topic,
)
from simulators.registry import DeviceSpec

Override = dict[str, float | bool]
_TELEMETRY: Final = Channel.TELEMETRY.value  # enum attribute access is slow in the hot path
_EVENT: Final = Channel.EVENT.value

# (low, high, step, bias) of a random walk; quiet ranges are the ones the brief gives.
_QUIET: Final = {
    "smoke_db_m": (0.0, 0.05, 0.004, 0.0),
    "gas_lel_pct": (0.0, 3.0, 0.25, 0.0),
    "co_ppm": (0.0, 5.0, 0.4, 0.0),
}
_ALARMED: Final = {
    "smoke_db_m": (0.15, 1.2, 0.02, 0.02),  # keeps rising, as a developing fire does
    "gas_lel_pct": (20.0, 60.0, 1.0, 0.5),
    "co_ppm": (60.0, 400.0, 8.0, 4.0),
}
# The device's own alarm points: ~0.15 dB/m smoke, the usual 20 %LEL low alarm of GB 15322,
# and a CO level between EN 50291's 50 and 100 ppm points.
THRESHOLDS: Final = {"smoke_db_m": 0.15, "gas_lel_pct": 20.0, "co_ppm": 60.0}
_SOURCES: Final = {
    "smoke_db_m": EventSource.SMOKE,
    "gas_lel_pct": EventSource.GAS,
    "co_ppm": EventSource.CO,
}
SENSORS: Final = {
    DeviceKind.SMOKE: ("smoke_db_m",),
    DeviceKind.GAS: ("gas_lel_pct",),
    DeviceKind.CO: ("co_ppm",),
    DeviceKind.MULTI: ("smoke_db_m", "co_ppm"),
}
_FAULTS: Final = {
    DeviceKind.SMOKE: (FaultCode.CHAMBER_DIRTY, FaultCode.SENSOR_FAULT, FaultCode.COMM_FAULT),
    DeviceKind.GAS: (FaultCode.SENSOR_FAULT, FaultCode.VALVE_FAULT, FaultCode.COMM_FAULT),
    DeviceKind.CO: (FaultCode.SENSOR_FAULT, FaultCode.END_OF_LIFE, FaultCode.COMM_FAULT),
    DeviceKind.MULTI: (FaultCode.CHAMBER_DIRTY, FaultCode.SENSOR_FAULT, FaultCode.COMM_FAULT),
}
_UNITS: Final = {"smoke_db_m": "dB/m", "gas_lel_pct": "%LEL", "co_ppm": "ppm"}
_WHAT: Final = {"smoke_db_m": "chamber", "gas_lel_pct": "gas", "co_ppm": "CO"}
_TEMPERATURE_QUIET: Final = (16.0, 28.0, 0.15, 0.0)
_TEMPERATURE_FIRE: Final = (16.0, 60.0, 0.4, 0.5)
_RSSI: Final = (-95.0, -55.0, 1.5, 0.0)
BATTERY_LOW_PCT: Final = 20.0
# Per-message chances when nothing else is going on.
P_TEST: Final = 1 / 5_000
P_FAULT: Final = 1 / 20_000
P_HEARTBEAT: Final = 0.03
_DISCHARGE_PER_MESSAGE: Final = 0.01  # up to this many percent, 0.005 on average


@dataclass(slots=True)
class Walk:
    """A bounded random walk with an optional drift."""

    value: float
    low: float
    high: float
    step: float
    bias: float = 0.0

    def next(self, rng: random.Random) -> float:
        """Move one step and return the new value."""
        moved = self.value + self.bias + (rng.random() * 2.0 - 1.0) * self.step
        self.value = min(self.high, max(self.low, moved))
        return self.value

    def retarget(self, bounds: tuple[float, float, float, float]) -> None:
        """Use new bounds, step and drift from now on."""
        self.low, self.high, self.step, self.bias = bounds
        self.value = min(self.high, max(self.low, self.value))


class SimDevice:
    """A simulated detector; `next_message` gives its next publish, scenarios queue theirs."""

    def __init__(
        self,
        spec: DeviceSpec,
        *,
        seed: int | str = 1,
        prefix: str = DEFAULT_PREFIX,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.rng = rng or random.Random(f"{seed}/{spec.id}")
        self.seq = 0
        self.silent = False
        self.alarm_field: str | None = None
        self.faults: dict[FaultCode, int] = {}  # code -> messages until it clears, -1: never
        self.on_pending: Callable[[SimDevice], None] | None = None
        self.ts_style: TsStyle = "rfc3339" if self.rng.random() < 0.7 else "epoch_ms"
        self._pending: deque[tuple[Channel, Override | dict[str, str]]] = deque()
        self._topics = {c: topic(prefix, spec.institution, spec.id, c.value) for c in Channel}
        self._sensors = {name: self._quiet_walk(name) for name in SENSORS[spec.kind]}
        self._temperature = Walk(self.rng.uniform(18.0, 26.0), *_TEMPERATURE_QUIET)
        self._rssi = Walk(self.rng.uniform(-90.0, -60.0), *_RSSI)
        self.battery: float | None = self._initial_battery() if spec.battery_powered else None
        self._battery_low_sent = False
        self._last_ms = 0

    def _quiet_walk(self, name: str) -> Walk:
        low, high, step, bias = _QUIET[name]
        return Walk(self.rng.uniform(low, high), low, high, step, bias)

    def _initial_battery(self) -> float:
        # One in ten starts just above the low-battery point so that demos show it soon.
        if self.rng.random() < 0.1:
            return self.rng.uniform(20.2, 23.0)
        return self.rng.uniform(40.0, 100.0)

    @property
    def id(self) -> str:
        """The device id used in topics."""
        return self.spec.id

    @property
    def kind(self) -> DeviceKind:
        """Smoke, gas, CO or multi-sensor."""
        return self.spec.kind

    @property
    def pending(self) -> int:
        """How many scenario or event messages wait to be sent."""
        return len(self._pending)

    def reading(self, field: str) -> float:
        """The current value of one sensor, e.g. `smoke_db_m`."""
        return self._sensors[field].value

    # ------------------------------------------------------------ messages

    def next_message(self, now_ms: int) -> Outgoing | None:
        """The next publish: queued messages first, else a reading or a random event."""
        if self.silent:
            return None
        if not self._pending:
            self._step()
        if self._pending:
            channel, fields = self._pending.popleft()
            if channel is Channel.EVENT:
                return self._event(now_ms, fields)
            return self._telemetry(now_ms, fields)
        if self.alarm_field is None and self.rng.random() < P_HEARTBEAT:
            return self._heartbeat(now_ms)
        return self._telemetry(now_ms, None)

    def status_online(self, now_ms: int) -> Outgoing:
        """The retained `online` status sent on every connect."""
        body = status_payload(
            ts=device_ts(now_ms, self.ts_style), heartbeat_s=self.spec.heartbeat_s
        )
        return Outgoing(self._topics[Channel.STATUS], encode(body), Channel.STATUS.value, True)

    def status_offline(self) -> Outgoing:
        """The retained `offline` status, also the device's MQTT last will."""
        return Outgoing(self._topics[Channel.STATUS], OFFLINE, Channel.STATUS.value, True)

    def _stamp(self, now_ms: int) -> str | int:
        """A `ts` later than the device's previous one."""
        # Readings of one burst (a scenario) must not share a time: the store keeps one point.
        self._last_ms = max(now_ms, self._last_ms + 1)
        return device_ts(self._last_ms, self.ts_style)

    def _take_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def _telemetry(self, now_ms: int, override: Override | dict[str, str] | None) -> Outgoing:
        rng = self.rng
        readings: dict[str, float | int] = {
            name: round(walk.next(rng), 3) for name, walk in self._sensors.items()
        }
        alarm = self.alarm_field is not None
        readings["temperature_c"] = round(self._temperature.next(rng), 1)
        if self.battery is not None:
            readings["battery_pct"] = max(1, round(self.battery))
        readings["rssi_dbm"] = round(self._rssi.next(rng))
        if override:
            alarm = self._apply(override, readings, alarm)
        body = telemetry_payload(
            ts=self._stamp(now_ms),
            seq=self._take_seq(),
            kind=self.spec.kind,
            readings=readings,
            alarm=alarm,
            faults=[code.value for code in self.faults] if self.faults else (),
        )
        return Outgoing(self._topics[Channel.TELEMETRY], encode(body), _TELEMETRY)

    def _apply(
        self, override: Override | dict[str, str], readings: dict[str, float | int], alarm: bool
    ) -> bool:
        """Put a scenario's values into a reading; returns the alarm flag to report."""
        for name, value in override.items():
            if name == "alarm":
                alarm = bool(value)
            elif isinstance(value, float) and name not in self._sensors:
                readings[name] = value  # the battery: its level is kept elsewhere
            elif isinstance(value, float):
                readings[name] = self._sensors[name].value = value
        return alarm

    def _heartbeat(self, now_ms: int) -> Outgoing:
        body = telemetry_payload(ts=self._stamp(now_ms), seq=self._take_seq(), kind=self.spec.kind)
        return Outgoing(self._topics[Channel.TELEMETRY], encode(body), _TELEMETRY)

    def _event(self, now_ms: int, fields: Override | dict[str, str]) -> Outgoing:
        source = fields.get("source")
        code = fields.get("code")
        detail = fields.get("detail")
        body = event_payload(
            ts=self._stamp(now_ms),
            seq=self._take_seq(),
            type=EventType(str(fields["type"])),
            source=EventSource(str(source)) if source is not None else None,
            code=str(code) if code is not None else None,
            detail=str(detail) if detail is not None else None,
        )
        return Outgoing(self._topics[Channel.EVENT], encode(body), _EVENT)

    def _step(self) -> None:
        """Random happenings between readings: battery, test button, faults."""
        if self.battery is not None:
            self.battery = max(0.5, self.battery - self.rng.random() * _DISCHARGE_PER_MESSAGE)
            if self.battery <= BATTERY_LOW_PCT and not self._battery_low_sent:
                self._battery_low_sent = True
                self._queue_event(EventType.BATTERY_LOW, detail=f"battery {self.battery:.0f}%")
        if self.faults:
            self._count_down_faults()
        chance = self.rng.random()
        if chance < P_TEST:
            self._queue_event(EventType.TEST, source=self._primary_source, detail="test button")
        elif chance < P_TEST + P_FAULT and not self.faults:
            code = self.rng.choice(_FAULTS[self.spec.kind])
            self._raise_fault(code, clear_after=self.rng.randint(20, 200))

    def _count_down_faults(self) -> None:
        for code, left in list(self.faults.items()):
            if left > 0:
                self.faults[code] = left - 1
            elif left == 0:
                self._clear_fault(code)

    # ------------------------------------------------------------ scenarios

    def start_alarm(self, source: EventSource | None = None) -> None:
        """Smoke (or gas, or CO) rises past the alarm point: two readings and an `alarm` event."""
        if self.alarm_field is not None:
            return
        field = SENSORS[self.spec.kind][0]
        if source is not None:
            field = next((f for f in self._sensors if _SOURCES[f] is source), "")
            if not field:
                raise ValueError(f"device {self.id} ({self.kind.value}) has no {source} sensor")
        threshold = THRESHOLDS[field]
        before = round(threshold * self.rng.uniform(0.5, 0.8), 3)
        after = round(threshold * self.rng.uniform(1.1, 1.5), 3)
        self._queue_telemetry({field: before, "alarm": False})
        self._enter_alarm(field, after)
        self._notify()

    def clear_alarm(self) -> None:
        """The reading falls back to quiet: one reading and an `alarm_clear` event."""
        field = self.alarm_field
        if field is None:
            return
        self._leave_alarm(field, round(_QUIET[field][1] * self.rng.uniform(0.4, 0.9), 3))
        self._notify()

    def gas_ramp(self, to_pct: float, steps: int = 5) -> None:
        """Gas moves to `to_pct` %LEL over `steps` readings, alarming across 20 %LEL."""
        field = "gas_lel_pct"
        if field not in self._sensors:
            raise ValueError(f"device {self.id} ({self.kind.value}) has no gas sensor")
        if not 0.0 <= to_pct <= 100.0 or steps < 1:
            raise ValueError("to_pct must be 0-100 %LEL and steps at least 1")
        walk = self._sensors[field]
        start = walk.value
        for step in range(1, steps + 1):
            value = round(start + (to_pct - start) * step / steps, 2)
            alarmed = self.alarm_field == field
            if value >= THRESHOLDS[field] and not alarmed:
                self._enter_alarm(field, value)
            elif value < THRESHOLDS[field] and alarmed:
                self._leave_alarm(field, value)
            else:
                self._queue_telemetry({field: value})
        self._hold_gas(walk, to_pct)
        self._notify()

    def fault(self, code: FaultCode, clear_after: int | None = None) -> None:
        """Raise a fault (a `fault` event; listed in `faults` until cleared)."""
        self._raise_fault(code, clear_after=clear_after)
        self._notify()

    def clear_fault(self, code: FaultCode) -> None:
        """Clear an active fault with a `fault_clear` event."""
        self._clear_fault(code)
        self._notify()

    def set_battery(self, to_pct: float) -> None:
        """The battery reads `to_pct` (drained, or replaced): a reading with it and, at or below
        20 %, a `battery_low` event."""
        if self.battery is None:
            raise ValueError(f"device {self.id} ({self.kind.value}) is mains powered")
        if not 0.0 < to_pct <= 100.0:
            raise ValueError("to_pct must be above 0 and at most 100")
        self.battery = to_pct
        self._battery_low_sent = to_pct <= BATTERY_LOW_PCT
        self._queue_telemetry({"battery_pct": to_pct})
        if self._battery_low_sent:
            self._queue_event(EventType.BATTERY_LOW, detail=f"battery {to_pct:.0f}%")
        self._notify()

    def press_test(self) -> None:
        """Someone presses the test button."""
        self._queue_event(EventType.TEST, source=self._primary_source, detail="test button")
        self._notify()

    def go_silent(self) -> None:
        """Stop publishing (dead battery, broken radio): nothing until `resume`."""
        self.silent = True

    def resume(self) -> None:
        """Publish again after `go_silent`."""
        self.silent = False
        self._notify()

    # ------------------------------------------------------------ helpers

    @property
    def _primary_source(self) -> EventSource:
        return _SOURCES[SENSORS[self.spec.kind][0]]

    def _enter_alarm(self, field: str, value: float) -> None:
        self.alarm_field = field
        self._sensors[field].value = value
        self._sensors[field].retarget(_ALARMED[field])
        if field == "smoke_db_m":
            self._temperature.retarget(_TEMPERATURE_FIRE)
        self._queue_telemetry({field: value, "alarm": True})
        detail = f"{_WHAT[field]} {value:.3g} {_UNITS[field]}"
        self._queue_event(EventType.ALARM, source=_SOURCES[field], detail=detail)

    def _leave_alarm(self, field: str, value: float) -> None:
        self.alarm_field = None
        self._sensors[field].value = value
        self._sensors[field].retarget(_QUIET[field])
        self._temperature.retarget(_TEMPERATURE_QUIET)
        self._queue_telemetry({field: value, "alarm": False})
        self._queue_event(EventType.ALARM_CLEAR, source=_SOURCES[field])

    def _hold_gas(self, walk: Walk, level: float) -> None:
        """After a ramp, gas hovers around its new level without crossing the alarm point."""
        if level <= _QUIET["gas_lel_pct"][1]:
            walk.retarget(_QUIET["gas_lel_pct"])
        elif level >= THRESHOLDS["gas_lel_pct"]:
            walk.retarget((THRESHOLDS["gas_lel_pct"], min(100.0, level + 1.5), 0.5, 0.0))
        else:
            walk.retarget((max(0.0, level - 1.5), THRESHOLDS["gas_lel_pct"] - 0.1, 0.5, 0.0))
        walk.value = level

    def _raise_fault(self, code: FaultCode, *, clear_after: int | None) -> None:
        if code in self.faults:
            return
        self.faults[code] = -1 if clear_after is None else clear_after
        self._queue_event(EventType.FAULT, code=code.value, detail=f"self-check: {code.value}")

    def _clear_fault(self, code: FaultCode) -> None:
        if self.faults.pop(code, None) is not None:
            self._queue_event(EventType.FAULT_CLEAR, code=code.value)

    def _queue_telemetry(self, override: Override) -> None:
        self._pending.append((Channel.TELEMETRY, override))

    def _queue_event(
        self,
        type: EventType,  # the contract's field name
        *,
        source: EventSource | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        fields = {"type": type.value, "source": source, "code": code, "detail": detail}
        self._pending.append((Channel.EVENT, {k: v for k, v in fields.items() if v is not None}))

    def _notify(self) -> None:
        if self.on_pending is not None and self._pending and not self.silent:
            self.on_pending(self)

"""Robots: urgent notices first, bursts merged, the rate limit kept, nothing lost (fake clock)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.events import to_event
from alerts.outputs import WebhookError
from alerts.robots import TURN_S, RateLimit, RobotOutput
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity
from core.eventlog import JournalEventLog
from core.registry.models import Institution
from core.settings import Webhook

AT = datetime(2026, 12, 2, 13, 5, 9, tzinfo=UTC)
HOMES = {
    f"inst-{n}": Institution(id=f"inst-{n}", name=f"第{n}养老院", town="城关镇") for n in range(30)
}


def change(device: str, kind: AlertKind, institution: str = "inst-1") -> AlertChange:
    severity = (
        Severity.CRITICAL
        if kind in (AlertKind.GAS_LEAK, AlertKind.SMOKE_ALARM)
        else (Severity.MAJOR)
    )
    alert = Alert(id=f"id-{device}", kind=kind, severity=severity, state=AlertState.ACTIVE,
                  institution=institution, device=device, raised_at=AT, updated_at=AT,
                  last_seen_at=AT)  # fmt: skip
    return AlertChange(alert=alert, action=AlertAction.RAISED, at=AT)


def alarm(device: str, institution: str) -> Any:
    return to_event(device, change(device, AlertKind.SMOKE_ALARM, institution))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 <= seconds <= TURN_S, "a turn never waits longer than TURN_S"
        self.now += seconds
        self.slept += seconds


class Robot:
    """A WeCom robot behind httpx's mock transport; refuses while told so."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str]] = []  # (time, text)
        self.down = False
        self.clock = Clock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(200, json={"errcode": 45009, "errmsg": "api freq out of limit"})
        self.got.append((self.clock.now, json.loads(request.content)["text"]["content"]))
        return httpx.Response(200, json={"errcode": 0})

    def titles(self) -> list[str]:
        return [text.splitlines()[0] for _, text in self.got]


@pytest.fixture
def log(tmp_path: Path) -> JournalEventLog:
    return JournalEventLog(tmp_path / "events", fsync=False)


def output(log: JournalEventLog, robot: Robot, tmp_path: Path, **kwargs: Any) -> RobotOutput:
    hook = Webhook.model_validate(
        {"name": "wx", "url": "https://qyapi.example/send?key=k", "format": "wecom",
         "min_severity": "minor"}
    )  # fmt: skip
    made = RobotOutput(
        hook,
        httpx.Client(transport=httpx.MockTransport(robot)),
        HOMES.get,
        log,
        log.checkpoints,
        state_dir=tmp_path / "notices",
        clock=robot.clock,
        sleep=robot.clock.sleep,
        fsync=False,
        **kwargs,
    )
    made.load()
    return made


def turn(out: RobotOutput, log: JournalEventLog) -> None:
    """What the feeding loop does: give the events from the checkpoint on."""
    out.handle(log.cursor(out.position).next_batch(500))


def turns(out: RobotOutput, log: JournalEventLog, seconds: float) -> None:
    """Turns for `seconds`; with nothing to wait for, the loop's idle wait passes the time."""
    clock = out.queue.limit.clock
    assert isinstance(clock, Clock)
    end = clock.now + seconds
    while clock.now < end:
        before = clock.now
        turn(out, log)
        if clock.now == before:
            clock.now += TURN_S


def test_an_alarm_overtakes_faults_that_wait_and_a_burst_of_offline_goes_as_one(
    log: JournalEventLog, robot: Robot, tmp_path: Path
) -> None:
    out = output(log, robot, tmp_path, merge_window_s=30)
    offline = [to_event(f"s{n}", change(f"s{n}", AlertKind.DEVICE_OFFLINE)) for n in range(12)]
    log.append([*offline, to_event("g1", change("g1", AlertKind.GAS_LEAK))])
    turn(out, log)
    assert robot.titles() == ["【紧急】燃气泄漏 · 新报警"], "the alarm at once, the faults held"
    assert out.position == 0, "the checkpoint stays before the oldest notice not sent"
    turns(out, log, 31)
    assert len(robot.got) == 2
    when, text = robot.got[1]
    assert 30 <= when <= 31 + TURN_S
    assert text.splitlines()[0] == "【重要】12 台设备离线（城关镇）"
    assert "1:第1养老院 · s0 · 21:05:09" in text and "…:…等共 12 条" in text
    assert "s5" not in text, "the first five are listed, the rest counted"
    assert out.position == 13 and len(out.queue) == 0


def test_the_rate_limit_holds_and_an_alarm_flood_merges_under_pressure(
    log: JournalEventLog, robot: Robot, tmp_path: Path
) -> None:
    out = output(log, robot, tmp_path, per_min=20)
    log.append([alarm(f"s{n}", f"inst-{n}") for n in range(25)])
    turn(out, log)
    assert len(robot.got) == 20, "20 in the first minute, each alarm its own message"
    assert out.position == 20
    turns(out, log, 58)  # the first turn waited 1 s already
    assert len(robot.got) == 20, "none more within the minute"
    turns(out, log, 2)
    assert len(robot.got) == 25 and out.position == 25
    # A flood in one home while the minute is spent: one message for what waits.
    log.append([alarm(f"x{n}", "inst-7") for n in range(30)])
    turns(out, log, 61)
    sent = robot.titles()[25:]
    assert sent[0] == "【紧急】30 个烟感报警（城关镇）" and len(sent) == 1
    assert max(w for w, _ in robot.got[:20]) < 60 <= robot.got[20][0], "within the limit"


def test_a_refusing_robot_loses_nothing_and_a_restart_repeats_nothing_sent(
    log: JournalEventLog, robot: Robot, tmp_path: Path
) -> None:
    out = output(log, robot, tmp_path)
    log.append([to_event("o1", change("o1", AlertKind.DEVICE_OFFLINE))])
    log.append([to_event("g1", change("g1", AlertKind.GAS_LEAK))])
    robot.down = True
    with pytest.raises(WebhookError, match="45009"):
        turn(out, log)
    assert out.position == 0 and robot.got == []
    robot.down = False
    turn(out, log)
    assert robot.titles() == ["【紧急】燃气泄漏 · 新报警"] and out.position == 0
    # A crash now: the gas alarm went ahead of the held offline notice (position 1).
    again = output(log, robot, tmp_path)
    assert again.position == 0, "the held notice will be read again"
    turns(again, log, 31)
    assert robot.titles() == ["【紧急】燃气泄漏 · 新报警", "【重要】设备离线 · 新报警"]
    assert again.position == 2
    assert not (tmp_path / "notices" / "wx.sent").read_text().strip("[]"), "nothing ahead"


def test_the_sliding_window() -> None:
    now = [0.0]
    limit = RateLimit(2, lambda: now[0])
    limit.take()
    now[0] = 10
    limit.take()
    assert limit.left() == 0 and limit.wait_s() == 50
    now[0] = 60
    assert limit.left() == 1 and limit.wait_s() == 0


@pytest.fixture
def robot() -> Robot:
    return Robot()

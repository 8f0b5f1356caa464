"""Notifications: what each alert change sends where, the webhook bodies, the outbox delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.dispatch import Dispatcher
from alerts.notify import Notifier, render, text_zh
from alerts.store import AlertStore, OutboxItem, Pending
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity
from core.clock import FakeClock
from core.db import make_engine, upgrade
from core.registry.models import Institution, InstitutionType, Person
from core.settings import AlertSettings, Webhook

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
INSTITUTION = Institution(
    id="inst-1",
    name="阳光养老院",
    type=InstitutionType.ELDERLY_CARE,
    town="城关镇",
    principal=Person(name="张三", phone="13800000001"),
)


def alert(**update: Any) -> Alert:
    values: dict[str, Any] = {
        "id": "a1",
        "kind": AlertKind.GAS_LEAK,
        "severity": Severity.CRITICAL,
        "state": AlertState.ACTIVE,
        "institution": "inst-1",
        "device": "gas-1",
        "zone": "kitchen",
        "raised_at": AT,
        "updated_at": AT,
        "last_seen_at": AT,
        "value": 55.0,
        "detail": "gas 55 %LEL",
    }
    return Alert(**(values | update))


def change(action: AlertAction = AlertAction.RAISED, **update: Any) -> AlertChange:
    return AlertChange(alert=alert(**update), action=action, at=AT)


def hook(name: str, **fields: Any) -> Webhook:
    return Webhook.model_validate({"name": name, "url": f"http://robot.example/{name}", **fields})


def notifier(*hooks: Webhook) -> Notifier:
    settings = AlertSettings(webhooks=list(hooks))
    return Notifier(settings, lambda i: INSTITUTION if i == "inst-1" else None)


def targets(items: list[OutboxItem]) -> list[str]:
    return [item.target for item in items]


def test_a_raised_alarm_goes_to_influx_mqtt_and_each_webhook() -> None:
    items = notifier(hook("duty"), hook("office")).plan("gas-1", change())
    assert targets(items) == ["influx", "mqtt", "webhook:duty", "webhook:office"]
    influx, mqtt, duty, _ = (item.payload for item in items)
    assert influx["tags"] == {
        "institution": "inst-1",
        "device": "gas-1",
        "kind": "gas_leak",
        "severity": "critical",
    }
    assert influx["fields"] == {"alert_id": "a1", "state": "active"}
    assert mqtt["topic"] == "hazardwatch/alerts/inst-1/a1"
    assert mqtt["body"]["id"] == "a1" and mqtt["body"]["escalation_level"] == 0
    assert duty["action"] == "raised" and duty["institution"]["name"] == "阳光养老院"


def test_repeats_send_nothing_and_test_records_only_reach_the_dashboards() -> None:
    n = notifier(hook("duty"))
    assert n.plan("gas-1", change(AlertAction.REPEATED)) == []
    assert targets(n.plan("gas-1", change(AlertAction.SUPPRESSED))) == ["influx"]
    assert targets(n.plan("gas-1", change(AlertAction.HUSHED))) == ["influx", "mqtt"]


def test_a_resolved_alert_empties_its_retained_message() -> None:
    items = notifier().plan("gas-1", change(AlertAction.RESOLVED, state=AlertState.RESOLVED))
    (mqtt,) = [item for item in items if item.target == "mqtt"]
    assert mqtt.payload["body"] == ""


@pytest.mark.parametrize(
    ("webhook", "severity", "escalations", "told"),
    [
        (hook("duty"), Severity.MAJOR, 0, True),
        (hook("duty"), Severity.MINOR, 0, False),  # default: major and above
        (hook("duty", min_severity="minor"), Severity.MINOR, 0, True),
        (hook("boss", level=1), Severity.CRITICAL, 0, False),
        (hook("boss", level=1), Severity.CRITICAL, 1, True),
        (hook("bureau", level=3), Severity.CRITICAL, 2, False),
        (hook("bureau", level=3), Severity.CRITICAL, 7, True),  # the level stops at 3
        (hook("town", towns=["城关镇"]), Severity.CRITICAL, 0, True),
        (hook("town", towns=["东城街道"]), Severity.CRITICAL, 0, False),
    ],
)
def test_who_is_told(webhook: Webhook, severity: Severity, escalations: int, told: bool) -> None:
    action = AlertAction.ESCALATED if escalations else AlertAction.RAISED
    items = notifier(webhook).plan(
        "gas-1", change(action, severity=severity, escalations=escalations)
    )
    assert (f"webhook:{webhook.name}" in targets(items)) is told


def test_two_changes_in_one_millisecond_are_two_points() -> None:
    """A point is its series and time: a smoke alarm raised and confirmed at once is two."""
    n = notifier()
    first = n.plan("gas-1", change())[0].payload
    second = n.plan("gas-1", change(AlertAction.CONFIRMED))[0].payload
    other = n.plan("gas-2", change(device="gas-2"))[0].payload
    assert second["time_ms"] == first["time_ms"] + 1
    assert other["time_ms"] == first["time_ms"], "another series keeps its own time"


def message(escalations: int = 0, note: str | None = None) -> dict[str, Any]:
    item = notifier(hook("duty")).plan(
        "gas-1",
        AlertChange(
            alert=alert(escalations=escalations),
            action=AlertAction.ESCALATED if escalations else AlertAction.RAISED,
            at=AT,
            actor="zhou",
            note=note,
        ),
    )[-1]
    return item.payload


def test_the_chinese_text_names_what_where_and_who() -> None:
    text = text_zh(message(escalations=2, note="已关阀"))
    assert text.splitlines()[0] == "【紧急】燃气泄漏 · 未确认·升级通知"
    assert "机构:阳光养老院(城关镇)" in text
    assert "设备:gas-1 防火分区:kitchen" in text
    assert "通知级别:乡镇(街道)民政所" in text
    assert "主要负责人:张三 13800000001" in text
    assert "备注:已关阀(zhou)" in text


def test_generic_webhooks_get_the_message_itself() -> None:
    body = message()
    assert render(hook("duty"), body) == ("http://robot.example/duty", body)


def test_wecom_mentions_the_principal_from_level_1() -> None:
    wecom = hook("wx", format="wecom")
    _, quiet = render(wecom, message())
    _, loud = render(wecom, message(escalations=1))
    assert quiet["msgtype"] == "text" and quiet["text"]["mentioned_mobile_list"] == []
    assert loud["text"]["mentioned_mobile_list"] == ["13800000001"]
    assert loud["text"]["content"] == text_zh(message(escalations=1))


def test_dingtalk_bodies_are_signed_when_a_secret_is_set() -> None:
    plain = hook("dd", format="dingtalk")
    url, body = render(plain, message(escalations=1))
    assert url == "http://robot.example/dd"
    assert body["at"] == {"atMobiles": ["13800000001"], "isAtAll": False}
    assert body["text"]["content"].endswith(" @13800000001")

    signed = hook("dd", format="dingtalk", secret="SEC123", url="https://oapi.example/robot?a=1")
    url, _ = render(signed, message(), now_ms=1700000000000)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["a"] == ["1"] and query["timestamp"] == ["1700000000000"]
    # DingTalk's documented recipe: HMAC-SHA256 over "timestamp\nsecret", keyed by the secret.
    mac = hmac.new(b"SEC123", b"1700000000000\nSEC123", hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(mac).decode()]


# ---------------------------------------------------------------------- the outbox


class Targets:
    """Delivery functions that record what they got and fail while told to."""

    def __init__(self) -> None:
        self.got: dict[str, list[int]] = {}
        self.down: set[str] = set()

    def deliver(self, name: str) -> Any:
        def send(row: Pending) -> None:
            if name in self.down:
                raise ConnectionError(f"{name} is down")
            self.got.setdefault(name, []).append(row.payload["n"])

        return send


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    url = f"sqlite:///{tmp_path / 'alerts.sqlite'}"
    upgrade(url)
    return AlertStore(make_engine(url))


def queue(store: AlertStore, clock: FakeClock, target: str, numbers: range) -> None:
    items = [OutboxItem(target, "a1", {"n": n}) for n in numbers]
    store.save([], None, items, clock.now())


def test_a_target_that_is_down_gets_everything_in_order_later(store: AlertStore) -> None:
    clock = FakeClock(AT)
    sinks = Targets()
    dispatcher = Dispatcher(
        store, {"hook": sinks.deliver("hook"), "mqtt": sinks.deliver("mqtt")}, clock
    )
    sinks.down.add("hook")
    queue(store, clock, "hook", range(3))
    queue(store, clock, "mqtt", range(3))
    dispatcher.run_once()
    assert sinks.got == {"mqtt": [0, 1, 2]}, "the others go on"
    queue(store, clock, "hook", range(3, 5))
    dispatcher.run_once()
    assert "hook" not in sinks.got, "later rows wait behind the failed one"
    assert store.undelivered() == 5

    sinks.down.clear()
    clock.advance(0.5)  # the first retry comes after 1 s ± 20 %
    dispatcher.run_once()
    assert "hook" not in sinks.got, "not before its retry time"
    for _ in range(20):  # back-off grows; a few minutes are enough here
        clock.advance(30)
        dispatcher.run_once()
    assert sinks.got["hook"] == [0, 1, 2, 3, 4]
    assert store.undelivered() == 0
    assert dispatcher.failures == 1


def test_a_removed_target_keeps_its_rows(store: AlertStore) -> None:
    clock = FakeClock(AT)
    queue(store, clock, "webhook:gone", range(2))
    dispatcher = Dispatcher(store, {}, clock)
    dispatcher.run_once()
    assert store.undelivered() == 2 and dispatcher.failures == 1


def test_delivered_rows_are_pruned_after_a_week(store: AlertStore) -> None:
    clock = FakeClock(AT)
    sinks = Targets()
    dispatcher = Dispatcher(store, {"mqtt": sinks.deliver("mqtt")}, clock)
    queue(store, clock, "mqtt", range(2))
    dispatcher.run_once()
    assert store.prune_delivered(clock.now() - timedelta(days=7)) == 0
    clock.advance(8 * 24 * 3600)
    queue(store, clock, "mqtt", range(2, 3))
    dispatcher.run_once()  # prunes on its hourly round
    assert store.prune_delivered(clock.now() + timedelta(seconds=1)) == 1, "only the new row left"


def ticket_change(action: str = "opened", **ticket: Any) -> dict[str, Any]:
    values = {
        "id": "t1",
        "institution": "inst-1",
        "title": "燃气泄漏(重大事故隐患)",
        "severity": "critical",
        "major_hazard": True,
        "responsible_unit": "阳光养老院",
        "responsible_person": "李四",
        "due_at": "2026-11-24T08:00:00Z",
        "escalation_level": 0,
    }
    return {"action": action, "at": "2026-11-23T08:00:00Z", "actor": "system", "note": None,
            "ticket": values | ticket}  # fmt: skip


def test_ticket_changes_go_to_the_webhooks_that_should_hear_of_them() -> None:
    n = notifier(hook("duty"), hook("town", level=2, towns=["城关镇"]), hook("far", towns=["x"]))
    opened = n.plan_ticket(ticket_change())
    assert targets(opened) == ["webhook:duty"]
    assert opened[0].alert_id == "t1"
    assert opened[0].payload["institution"]["name"] == "阳光养老院"
    escalated = n.plan_ticket(ticket_change("escalated", escalation_level=2))
    assert targets(escalated) == ["webhook:duty", "webhook:town"]
    assert n.plan_ticket(ticket_change(severity="minor")) == [], "below the hooks' minimum"


def test_a_ticket_reads_in_chinese_and_mentions_the_principal_once_escalated() -> None:
    n = notifier(hook("wx", format="wecom", level=1))
    (item,) = n.plan_ticket(ticket_change("escalated", escalation_level=3))
    _, body = render(hook("wx", format="wecom"), item.payload)
    text = body["text"]["content"]
    assert text.splitlines()[0] == "【重大事故隐患】隐患工单 · 逾期升级"
    assert "整改责任:阳光养老院 李四" in text and "督办级别:区民政局挂牌督办" in text
    assert body["text"]["mentioned_mobile_list"] == ["13800000001"]

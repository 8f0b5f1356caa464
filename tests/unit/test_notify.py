"""Notifications: what each alert change sends where, the webhook bodies, the outputs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.events import to_event
from alerts.notify import (
    alert_message,
    alert_point,
    mqtt_publication,
    render,
    text_zh,
    ticket_message,
    wants,
)
from alerts.outputs import DELIVERY_HEADER, InfluxAlertOutput, WebhookError, WebhookOutput
from core.alerting import Alert, AlertAction, AlertChange, AlertKind, AlertState, Severity
from core.eventlog import TICKET, JournalEventLog, NewEvent
from core.points import Point
from core.registry.models import Institution, InstitutionType, Person
from core.settings import Webhook

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
INSTITUTION = Institution(
    id="inst-1",
    name="阳光养老院",
    type=InstitutionType.ELDERLY_CARE,
    town="城关镇",
    principal=Person(name="张三", phone="13800000001"),
)


def institutions(institution_id: str) -> Institution | None:
    return INSTITUTION if institution_id == "inst-1" else None


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
        "detail": "gas 55.0 %LEL, level 2",
    }
    return Alert(**(values | update))


def change(action: AlertAction = AlertAction.RAISED, **update: Any) -> AlertChange:
    return AlertChange(alert=alert(**update), action=action, at=AT)


def hook(name: str, **fields: Any) -> Webhook:
    return Webhook.model_validate({"name": name, "url": f"http://robot.example/{name}", **fields})


def told(webhook: Webhook, change: AlertChange) -> bool:
    message = alert_message(change, institutions)
    return message is not None and wants(webhook, message)


def test_a_raised_alarm_has_a_point_a_retained_message_and_a_notification() -> None:
    point = alert_point(change())
    assert point is not None and point.measurement == "alert"
    assert point.tags == {
        "institution": "inst-1",
        "device": "gas-1",
        "kind": "gas_leak",
        "severity": "critical",
    }
    assert point.fields == {"alert_id": "a1", "state": "active"}
    publication = mqtt_publication(change())
    assert publication is not None
    topic, body = publication
    assert topic == "hazardwatch/alerts/inst-1/a1"
    assert body["id"] == "a1" and body["escalation_level"] == 0
    message = alert_message(change(), institutions)
    assert message is not None
    assert (
        message.body["action"] == "raised" and message.body["institution"]["name"] == "阳光养老院"
    )
    assert (message.severity, message.level, message.town) == (Severity.CRITICAL, 0, "城关镇")


def test_repeats_send_nothing_and_test_records_only_reach_the_dashboards() -> None:
    repeat = change(AlertAction.REPEATED)
    assert (alert_point(repeat), mqtt_publication(repeat), alert_message(repeat, institutions)) == (
        None,
        None,
        None,
    )
    test = change(AlertAction.SUPPRESSED)
    assert alert_point(test) is not None
    assert mqtt_publication(test) is None and alert_message(test, institutions) is None
    hushed = change(AlertAction.HUSHED)
    assert mqtt_publication(hushed) is not None and alert_message(hushed, institutions) is None


def test_a_resolved_alert_empties_its_retained_message() -> None:
    publication = mqtt_publication(change(AlertAction.RESOLVED, state=AlertState.RESOLVED))
    assert publication is not None and publication[1] == ""


@pytest.mark.parametrize(
    ("webhook", "severity", "escalations", "expected"),
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
def test_who_is_told(
    webhook: Webhook, severity: Severity, escalations: int, expected: bool
) -> None:
    action = AlertAction.ESCALATED if escalations else AlertAction.RAISED
    assert told(webhook, change(action, severity=severity, escalations=escalations)) is expected


def message(escalations: int = 0, note: str | None = None) -> dict[str, Any]:
    found = alert_message(
        AlertChange(
            alert=alert(escalations=escalations),
            action=AlertAction.ESCALATED if escalations else AlertAction.RAISED,
            at=AT,
            actor="zhou",
            note=note,
        ),
        institutions,
    )
    assert found is not None
    return found.body


def test_the_chinese_text_names_what_where_and_who() -> None:
    text = text_zh(message(escalations=2, note="已关阀"))
    assert text.splitlines()[0] == "【紧急】燃气泄漏 · 未确认·升级通知"
    assert "机构:阳光养老院（城关镇）" in text
    assert "防火分区:kitchen\n设备:gas-1\n读数:55.0 %LEL\n详情:可燃气体浓度达到2级报警" in text
    assert "时间:2026-11-23 16:00:00" in text, "in Asia/Shanghai, as people read it"
    assert "通知级别:乡镇（街道）民政所" in text
    assert "主要负责人:张三 13800000001" in text
    assert "备注:「已关阀」（zhou）" in text
    assert text.splitlines()[-1] == "在控制台查看:http://127.0.0.1:8080/alerts/a1"


def test_generic_webhooks_get_the_message_itself_plus_text_local_time_and_link() -> None:
    body = message()
    url, sent = render(hook("duty"), body)
    assert url == "http://robot.example/duty"
    assert {k: v for k, v in sent.items() if k in body} == body, "machine fields as they were"
    assert sent["at"] == "2026-11-23T08:00:00+00:00" and sent["at_local"] == "2026-11-23 16:00:00"
    assert sent["link"] == "http://127.0.0.1:8080/alerts/a1"
    assert sent["text"] == text_zh(body)


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


# ---------------------------------------------------------------------- the outputs


class Receiver:
    """A webhook receiver behind httpx's mock transport; down while told so."""

    def __init__(self) -> None:
        self.got: list[tuple[int, dict[str, Any]]] = []  # (delivery id, body)
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503, text="maintenance")
        body = json.loads(request.content)
        self.got.append((int(request.headers[DELIVERY_HEADER]), body))
        return httpx.Response(200, json={"ok": True})


@pytest.fixture
def log(tmp_path: Path) -> JournalEventLog:
    return JournalEventLog(tmp_path / "events", fsync=False)


def webhook_output(
    log: JournalEventLog, receiver: Receiver, webhook: Webhook | None = None
) -> WebhookOutput:
    http = httpx.Client(transport=httpx.MockTransport(receiver))
    output = WebhookOutput(webhook or hook("duty"), http, institutions, log, log.checkpoints)
    output.load()
    return output


def test_a_webhook_that_is_down_gets_every_change_in_order_once_it_is_back(
    log: JournalEventLog,
) -> None:
    receiver = Receiver()
    output = webhook_output(log, receiver)
    assert output.position == 0
    log.append([to_event("gas-1", change(severity=Severity.MAJOR, id=f"a{n}")) for n in range(3)])
    receiver.down = True
    with pytest.raises(WebhookError, match="503"):
        output.handle(log.cursor(output.position).next_batch(10))
    assert output.position == 0, "nothing was taken: nothing is skipped"
    receiver.down = False
    output.handle(log.cursor(output.position).next_batch(10))
    assert [(delivery, body["alert"]["id"]) for delivery, body in receiver.got] == [
        (1, "a0"),
        (2, "a1"),
        (3, "a2"),
    ], "in order, each with its position as the delivery id"
    again = webhook_output(log, receiver)
    assert again.position == 3, "the position survives a restart"


def test_a_failure_part_way_keeps_what_was_delivered(log: JournalEventLog) -> None:
    receiver = Receiver()
    output = webhook_output(log, receiver)
    log.append([to_event("gas-1", change(id=f"a{n}")) for n in range(3)])
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return receiver(request) if calls["n"] < 2 else httpx.Response(500)

    output._http = httpx.Client(transport=httpx.MockTransport(flaky))
    with pytest.raises(WebhookError):
        output.handle(log.cursor(0).next_batch(10))
    assert output.position == 1 and len(receiver.got) == 1


def test_a_webhook_added_later_starts_with_what_comes_next(log: JournalEventLog) -> None:
    log.append([to_event("gas-1", change(id="old"))])
    receiver = Receiver()
    output = webhook_output(log, receiver)
    assert output.position == 1, "old alarms are not sent to a new webhook"
    assert webhook_output(log, receiver).position == 1, "and that start is kept at once"


def test_ticket_events_reach_the_webhooks_that_should_hear_of_them(log: JournalEventLog) -> None:
    receiver = Receiver()
    output = webhook_output(log, receiver)
    for body in (ticket_change(), ticket_change("assigned", notify=False)):
        data = json.dumps(body).encode()
        log.append([NewEvent(TICKET, "t1", "inst-1", data)])
    output.handle(log.cursor(0).next_batch(10))
    ((delivery, body),) = receiver.got
    assert delivery == 1 and body["ticket"]["id"] == "t1"
    assert body["institution"]["name"] == "阳光养老院" and "notify" not in body


class Sink:
    name = "test"

    def __init__(self) -> None:
        self.points: list[Point] = []

    def write(self, points: Any) -> None:
        self.points.extend(points)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_two_changes_in_one_millisecond_are_two_points(log: JournalEventLog) -> None:
    """A point is its series and time: a smoke alarm raised and confirmed at once is two."""
    sink = Sink()
    output = InfluxAlertOutput(sink, log, log.checkpoints)
    output.load()
    log.append(
        [
            to_event("gas-1", change()),
            to_event("gas-1", change(AlertAction.CONFIRMED)),
            to_event("gas-2", change(device="gas-2")),
            to_event("gas-1", change(AlertAction.REPEATED)),
        ]
    )
    output.handle(log.cursor(0).next_batch(10))
    first, second, other = sink.points
    assert second.time_ms == first.time_ms + 1
    assert other.time_ms == first.time_ms, "another series keeps its own time"
    assert output.position == 4


def ticket_change(action: str = "opened", notify: bool = True, **ticket: Any) -> dict[str, Any]:
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
            "ticket": values | ticket, "notify": notify, "event_id": 7}  # fmt: skip


def ticket_told(webhook: Webhook, body: dict[str, Any]) -> bool:
    message = ticket_message(body, institutions)
    return message is not None and wants(webhook, message)


def test_ticket_changes_go_to_the_webhooks_that_should_hear_of_them() -> None:
    duty, town = hook("duty"), hook("town", level=2, towns=["城关镇"])
    far = hook("far", towns=["x"])
    opened = ticket_change()
    assert [ticket_told(h, opened) for h in (duty, town, far)] == [True, False, False]
    message = ticket_message(opened, institutions)
    assert message is not None and message.body["institution"]["name"] == "阳光养老院"
    assert "notify" not in message.body and message.body["event_id"] == 7, "tells a repeat"
    escalated = ticket_change("escalated", escalation_level=2)
    assert [ticket_told(h, escalated) for h in (duty, town, far)] == [True, True, False]
    assert not ticket_told(duty, ticket_change(severity="minor")), "below the hook's minimum"
    assert ticket_message(ticket_change("assigned", notify=False), institutions) is None


def test_a_ticket_reads_in_chinese_and_mentions_the_principal_once_escalated() -> None:
    message = ticket_message(ticket_change("escalated", escalation_level=3), institutions)
    assert message is not None
    _, body = render(hook("wx", format="wecom"), message.body)
    text = body["text"]["content"]
    assert text.splitlines()[0] == "【重大事故隐患】隐患工单 · 逾期升级"
    assert "整改责任:阳光养老院 李四" in text and "督办级别:区民政局挂牌督办" in text
    assert body["text"]["mentioned_mobile_list"] == ["13800000001"]


def test_a_batch_written_again_after_a_failure_is_the_same_points(log: JournalEventLog) -> None:
    class Flaky(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.fail = True

        def write(self, points: Any) -> None:
            super().write(points)  # the store took them, but the answer was lost
            if self.fail:
                self.fail = False
                raise ConnectionError("timed out")

    sink = Flaky()
    output = InfluxAlertOutput(sink, log, log.checkpoints)
    output.load()
    log.append([to_event("gas-1", change()), to_event("gas-1", change(AlertAction.CONFIRMED))])
    batch = log.cursor(0).next_batch(10)
    with pytest.raises(ConnectionError):
        output.handle(batch)
    output.handle(batch)
    first_try, second_try = sink.points[:2], sink.points[2:]
    assert first_try == second_try, "the same times: the store keeps each point once"

"""What each alert change sends where, and the message bodies of the webhook formats.

Every change becomes outbox rows (alerts/store.py) in the transaction that stores it: one for
MQTT, one for InfluxDB, one per webhook that should hear of it. The dispatcher delivers them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from alerts.store import OutboxItem
from core.alerting import Alert, AlertAction, AlertChange, AlertState, Severity
from core.clock import to_epoch_ms
from core.registry.models import Institution
from core.settings import AlertSettings, Webhook

ALERT_TOPIC = "hazardwatch/alerts/{institution}/{alert_id}"  # contract section 1
# Changes a person should hear of; repeats and test-window records only update the board.
NOTIFY = frozenset(
    {
        AlertAction.RAISED,
        AlertAction.REACTIVATED,
        AlertAction.SEVERITY,
        AlertAction.ESCALATED,
        AlertAction.ACKNOWLEDGED,
        AlertAction.CLEARED,
        AlertAction.RESOLVED,
    }
)
_QUIET = frozenset({AlertAction.REPEATED})

KIND_ZH = {
    "smoke_alarm": "烟感报警",
    "fire_confirmed": "火警确认",
    "gas_leak": "燃气泄漏",
    "co_alarm": "一氧化碳报警",
    "device_offline": "设备离线",
    "low_battery": "电量低",
    "device_fault": "设备故障",
    "tamper": "设备被拆",
}
SEVERITY_ZH = {"critical": "紧急", "major": "重要", "minor": "次要", "warning": "提示"}
ACTION_ZH = {
    "raised": "新报警",
    "reactivated": "再次报警",
    "severity": "级别变化",
    "escalated": "未确认·升级通知",
    "acknowledged": "已确认",
    "cleared": "已消除(待确认)",
    "resolved": "已解除",
}
STAMPS_KEPT = 10_000
LEVEL_ZH = ["值班人员", "机构主要负责人", "乡镇(街道)民政所", "区民政局"]

InstitutionLookup = Callable[[str], Institution | None]


def alert_json(alert: Alert) -> dict[str, Any]:
    """The alert as the API shows it."""
    return alert.model_dump(mode="json")


class Notifier:
    """Plans the deliveries of each change."""

    def __init__(self, settings: AlertSettings, institutions: InstitutionLookup) -> None:
        self._settings = settings
        self._institutions = institutions
        self._stamps: dict[tuple[str, ...], int] = {}  # series -> time of its last point

    def _stamp(self, point: dict[str, Any]) -> dict[str, Any]:
        """Move the point on by a millisecond if its series has one at that time already.

        A point is identified by measurement, tags and time (contract section 2): two changes
        of one alert in the same millisecond (a smoke alarm raised and confirmed by the same
        message) would otherwise be one point.
        """
        series = tuple(point["tags"].values())
        time_ms = max(point["time_ms"], self._stamps.get(series, 0) + 1)
        self._stamps[series] = time_ms
        if len(self._stamps) > STAMPS_KEPT:  # only the last second matters
            recent = time_ms - 1000
            self._stamps = {k: v for k, v in self._stamps.items() if v >= recent}
        return point | {"time_ms": time_ms}

    def plan(self, subject: str, change: AlertChange) -> list[OutboxItem]:
        """The outbox rows for one change."""
        alert = change.alert
        if change.action in _QUIET:
            return []
        items = [OutboxItem("influx", alert.id, self._stamp(_point(change)))]
        if change.action is AlertAction.SUPPRESSED:
            return items  # on the dashboards as a test, nowhere else
        topic = ALERT_TOPIC.format(institution=alert.institution, alert_id=alert.id)
        body = "" if alert.state is AlertState.RESOLVED else alert_json(alert)
        items.append(OutboxItem("mqtt", alert.id, {"topic": topic, "body": body}))
        if change.action in NOTIFY:
            items.extend(self._webhooks(change))
        return items

    def _webhooks(self, change: AlertChange) -> list[OutboxItem]:
        alert = change.alert
        institution = self._institutions(alert.institution)
        town = institution.town if institution else None
        message = {
            "action": change.action.value,
            "at": change.at.isoformat(),
            "actor": change.actor,
            "note": change.note,
            "alert": alert_json(alert),
            "institution": institution.model_dump(mode="json") if institution else None,
        }
        return self._to_hooks(alert.id, message, alert.severity, alert.escalation_level, town)

    def plan_ticket(self, change: dict[str, Any]) -> list[OutboxItem]:
        """Webhook rows for a change of a hazard ticket (`{action, at, actor, note, ticket}`).

        Tickets travel the alerts' outbox and webhooks: the same retries, order and formats.
        """
        ticket = change["ticket"]
        institution = self._institutions(ticket["institution"])
        message = change | {
            "institution": institution.model_dump(mode="json") if institution else None
        }
        severity = Severity(ticket["severity"])
        town = institution.town if institution else None
        return self._to_hooks(ticket["id"], message, severity, ticket["escalation_level"], town)

    def _to_hooks(
        self, about: str, message: dict[str, Any], severity: Severity, level: int, town: str | None
    ) -> list[OutboxItem]:
        items = []
        for hook in self._settings.webhooks:
            if severity.rank < hook.min_severity.rank:
                continue
            if hook.level > level:
                continue
            if hook.towns and town not in hook.towns:
                continue
            items.append(OutboxItem(f"webhook:{hook.name}", about, message))
        return items


def _point(change: AlertChange) -> dict[str, Any]:
    alert = change.alert
    return {
        "measurement": "alert",
        "tags": {
            "institution": alert.institution,
            "device": alert.device,
            "kind": alert.kind.value,
            "severity": alert.severity.value,
        },
        "fields": {"alert_id": alert.id, "state": alert.state.value},
        "time_ms": to_epoch_ms(change.at),
    }


# ---------------------------------------------------------------------- webhook bodies


def mentions(message: dict[str, Any]) -> list[str]:
    """Phones to @-mention: the institution principal once the alert (or ticket) reached level 1."""
    institution = message.get("institution") or {}
    principal = institution.get("principal") or {}
    level = (message.get("alert") or message.get("ticket") or {}).get("escalation_level", 0)
    phone = principal.get("phone")
    return [phone] if phone and level >= 1 else []


TICKET_ACTION_ZH = {
    "opened": "新隐患工单",
    "escalated": "逾期升级",
    "rectified": "已整改待核查",
    "verified": "已核查销号",
    "rejected": "核查未通过",
    "reopened": "重新打开",
}
TICKET_LEVEL_ZH = ["", "机构主要负责人", "乡镇(街道)民政所", "区民政局挂牌督办"]


def ticket_text_zh(message: dict[str, Any]) -> str:
    """A ticket change in Simplified Chinese."""
    ticket = message["ticket"]
    institution = message.get("institution") or {}
    where = institution.get("name") or ticket["institution"]
    major = "【重大事故隐患】" if ticket.get("major_hazard") else ""
    lines = [
        f"{major}隐患工单 · {TICKET_ACTION_ZH.get(message['action'], message['action'])}",
        f"机构:{where}" + (f"({institution['town']})" if institution.get("town") else ""),
        f"隐患:{ticket['title']}",
        f"整改责任:{ticket['responsible_unit']} {ticket['responsible_person']}",
        f"整改时限:{ticket['due_at']}",
        f"工单编号:{ticket['id']}",
    ]
    level = ticket.get("escalation_level", 0)
    if level:
        lines.append(f"督办级别:{TICKET_LEVEL_ZH[min(level, 3)]}")
    if message.get("note"):
        lines.append(f"备注:{message['note']}({message['actor']})")
    return "\n".join(lines)


def text_zh(message: dict[str, Any]) -> str:
    """The notification in Simplified Chinese, as duty groups read it."""
    if "ticket" in message:
        return ticket_text_zh(message)
    alert = message["alert"]
    institution = message.get("institution") or {}
    where = institution.get("name") or alert["institution"]
    lines = [
        f"【{SEVERITY_ZH.get(alert['severity'], alert['severity'])}】"
        f"{KIND_ZH.get(alert['kind'], alert['kind'])} · {ACTION_ZH.get(message['action'], '')}",
        f"机构:{where}" + (f"({institution['town']})" if institution.get("town") else ""),
        f"设备:{alert['device']}" + (f" 防火分区:{alert['zone']}" if alert.get("zone") else ""),
        f"详情:{alert['detail']}",
        f"时间:{message['at']}",
        f"通知级别:{LEVEL_ZH[min(alert.get('escalation_level', 0), 3)]}",
        f"报警编号:{alert['id']}",
    ]
    principal = institution.get("principal") or {}
    if principal.get("name"):
        lines.append(f"主要负责人:{principal['name']} {principal.get('phone') or ''}".rstrip())
    if message.get("note"):
        lines.append(f"备注:{message['note']}({message['actor']})")
    return "\n".join(lines)


def render(hook: Webhook, message: dict[str, Any], now_ms: int | None = None) -> tuple[str, Any]:
    """The URL and JSON body for one webhook delivery."""
    url = str(hook.url)
    if hook.format == "generic":
        return url, message
    text = text_zh(message)
    phones = mentions(message)
    if hook.format == "wecom":
        # WeCom group robot: text messages can @-mention by mobile number.
        return url, {"msgtype": "text", "text": {"content": text, "mentioned_mobile_list": phones}}
    body = {
        "msgtype": "text",
        "text": {"content": text + "".join(f" @{p}" for p in phones)},
        "at": {"atMobiles": phones, "isAtAll": False},
    }
    if hook.secret is not None:
        url = _dingtalk_signed(url, hook.secret.get_secret_value(), now_ms)
    return url, body


def _dingtalk_signed(url: str, secret: str, now_ms: int | None) -> str:
    """DingTalk's robot signature: HMAC-SHA256 of "timestamp\\nsecret", base64, URL-encoded."""
    timestamp = str(now_ms if now_ms is not None else int(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest))
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}timestamp={timestamp}&sign={sign}"

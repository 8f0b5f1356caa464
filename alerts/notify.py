"""What each alert change sends where, and the message bodies of the webhook formats.

The outputs (alerts/outputs.py) read every change from the event log: MQTT gets each change
but repeats and test-window records, InfluxDB each but repeats, a webhook the changes people
should hear of, at its severity, escalation level and towns.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.alerting import Alert, AlertAction, AlertChange, AlertState, Severity
from core.clock import to_epoch_ms
from core.points import FieldValue, Point
from core.registry.models import Institution
from core.settings import Webhook

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
LEVEL_ZH = ["值班人员", "机构主要负责人", "乡镇(街道)民政所", "区民政局"]

InstitutionLookup = Callable[[str], Institution | None]


def alert_json(alert: Alert) -> dict[str, Any]:
    """The alert as the API shows it."""
    return alert.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class Message:
    """A notification for the webhooks: its body, and what decides who hears it."""

    body: dict[str, Any]
    severity: Severity
    level: int
    town: str | None


def alert_message(change: AlertChange, institutions: InstitutionLookup) -> Message | None:
    """The webhook notification of an alert change, if people should hear of it."""
    if change.action not in NOTIFY:
        return None
    alert = change.alert
    institution = institutions(alert.institution)
    body = {
        "action": change.action.value,
        "at": change.at.isoformat(),
        "actor": change.actor,
        "note": change.note,
        "alert": alert_json(alert),
        "institution": institution.model_dump(mode="json") if institution else None,
    }
    town = institution.town if institution else None
    return Message(body, alert.severity, alert.escalation_level, town)


def ticket_message(change: dict[str, Any], institutions: InstitutionLookup) -> Message | None:
    """The webhook notification of a hazard ticket's change (`{action, at, actor, note,
    ticket, notify}`), if the ledger marked it as one people should hear of."""
    if not change.get("notify"):
        return None
    ticket = change["ticket"]
    institution = institutions(ticket["institution"])
    body = {k: v for k, v in change.items() if k != "notify"}  # event_id tells a repeat
    body["institution"] = institution.model_dump(mode="json") if institution else None
    town = institution.town if institution else None
    return Message(body, Severity(ticket["severity"]), ticket["escalation_level"], town)


def wants(hook: Webhook, message: Message) -> bool:
    """Whether a webhook should hear of the message (severity, escalation level, town)."""
    if message.severity.rank < hook.min_severity.rank or hook.level > message.level:
        return False
    return not hook.towns or message.town in hook.towns


def mqtt_publication(change: AlertChange) -> tuple[str, Any] | None:
    """The retained MQTT message of a change (empty body once resolved), if it has one."""
    if change.action in _QUIET or change.action is AlertAction.SUPPRESSED:
        return None  # a test-window record is on the dashboards only
    alert = change.alert
    topic = ALERT_TOPIC.format(institution=alert.institution, alert_id=alert.id)
    return topic, "" if alert.state is AlertState.RESOLVED else alert_json(alert)


def alert_point(change: AlertChange) -> Point | None:
    """The `alert` point of a change (contract section 2), if it has one."""
    if change.action in _QUIET:
        return None
    alert = change.alert
    tags = {
        "institution": alert.institution,
        "device": alert.device,
        "kind": alert.kind.value,
        "severity": alert.severity.value,
    }
    fields: dict[str, FieldValue] = {"alert_id": alert.id, "state": alert.state.value}
    return Point("alert", tags, fields, to_epoch_ms(change.at))


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

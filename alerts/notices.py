"""Notices people read: an alert or ticket change as a title, labelled lines and a link.

Times are in `[display] timezone` (`2026-12-02 21:05:09`), the language is the webhook's
(`[display] language` by default), every value from outside is made inert (alerts/escape.py),
and the link opens the alert (`{console_url}/alerts/{id}`) or ticket (`/tickets/{id}`) in the
console. The same notice renders as plain text (WeCom/DingTalk `text`, the generic JSON's
`text`, SMS) or as markdown (WeCom/DingTalk `markdown`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from alerts.details import Language, read_detail
from alerts.escape import inert, quoted
from core.clock import local_text
from core.registry.models import Device

DevicePlaces = Callable[[str], Device | None]

KIND = {
    "zh-CN": {
        "smoke_alarm": "烟感报警",
        "fire_confirmed": "火警确认",
        "gas_leak": "燃气泄漏",
        "co_alarm": "一氧化碳报警",
        "device_offline": "设备离线",
        "low_battery": "电量低",
        "device_fault": "设备故障",
        "tamper": "设备被拆",
    },
    "en": {
        "smoke_alarm": "Smoke alarm",
        "fire_confirmed": "Fire confirmed",
        "gas_leak": "Gas leak",
        "co_alarm": "CO alarm",
        "device_offline": "Device offline",
        "low_battery": "Low battery",
        "device_fault": "Device fault",
        "tamper": "Tamper",
    },
}
SEVERITY = {
    "zh-CN": {"critical": "紧急", "major": "重要", "minor": "次要", "warning": "提示"},
    "en": {"critical": "CRITICAL", "major": "MAJOR", "minor": "MINOR", "warning": "WARNING"},
}
ACTION = {
    "zh-CN": {
        "raised": "新报警",
        "reactivated": "再次报警",
        "severity": "级别变化",
        "escalated": "未确认·升级通知",
        "acknowledged": "已确认",
        "cleared": "已消除（待确认）",
        "resolved": "已解除",
    },
    "en": {
        "raised": "raised",
        "reactivated": "again",
        "severity": "severity changed",
        "escalated": "not acknowledged, escalated",
        "acknowledged": "acknowledged",
        "cleared": "cleared (to acknowledge)",
        "resolved": "resolved",
    },
}
LEVEL = {
    "zh-CN": ["值班人员", "机构主要负责人", "乡镇（街道）民政所", "区民政局"],
    "en": ["duty officer", "institution principal", "town office", "district bureau"],
}
TICKET_ACTION = {
    "zh-CN": {
        "opened": "新隐患工单",
        "escalated": "逾期升级",
        "rectified": "已整改待核查",
        "verified": "已核查销号",
        "rejected": "核查未通过",
        "reopened": "重新打开",
    },
    "en": {
        "opened": "new hazard ticket",
        "escalated": "overdue, escalated",
        "rectified": "rectified, to verify",
        "verified": "verified and closed",
        "rejected": "verification failed",
        "reopened": "reopened",
    },
}
TICKET_LEVEL = {
    "zh-CN": ["", "机构主要负责人", "乡镇（街道）民政所", "区民政局挂牌督办"],
    "en": ["", "institution principal", "town office", "district bureau"],
}
LABEL = {
    "zh-CN": {
        "institution": "机构",
        "place": "位置",
        "zone": "防火分区",
        "device": "设备",
        "value": "读数",
        "threshold": "阈值",
        "detail": "详情",
        "time": "时间",
        "level": "通知级别",
        "id": "报警编号",
        "principal": "主要负责人",
        "note": "备注",
        "hazard": "隐患",
        "responsible": "整改责任",
        "due": "整改时限",
        "ticket": "工单编号",
        "ticket_level": "督办级别",
        "open": "在控制台查看",
        "major": "【重大事故隐患】",
        "ticket_title": "隐患工单",
    },
    "en": {
        "institution": "Institution",
        "place": "Place",
        "zone": "Fire zone",
        "device": "Device",
        "value": "Reading",
        "threshold": "Threshold",
        "detail": "Detail",
        "time": "Time",
        "level": "Notified",
        "id": "Alert",
        "principal": "Principal",
        "note": "Note",
        "hazard": "Hazard",
        "responsible": "Responsible",
        "due": "Due",
        "ticket": "Ticket",
        "ticket_level": "Supervision",
        "open": "Open in the console",
        "major": "[MAJOR HAZARD] ",
        "ticket_title": "Hazard ticket",
    },
}
SEP = {"zh-CN": ":", "en": ": "}


@dataclass(frozen=True, slots=True)
class NoticeContext:
    """What notices need beyond the message: time zone, language, console, device places."""

    zone: tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    language: Language = "zh-CN"
    console_url: str = "http://127.0.0.1:8080"
    places: DevicePlaces = field(default=lambda _device: None)


@dataclass(frozen=True, slots=True)
class Notice:
    """A title (ours, inert values inside), labelled lines (inert values) and a link."""

    title: str
    lines: list[tuple[str, str]]
    link: str
    link_label: str

    def text(self, language: Language) -> str:
        """Plain text: the title, one line per label, the link."""
        sep = SEP.get(language, ":")
        body = [self.title, *(f"{label}{sep}{value}" for label, value in self.lines)]
        return "\n".join([*body, f"{self.link_label}{sep}{self.link}"])

    def markdown(self, language: Language) -> str:
        """Markdown of WeCom and DingTalk robots: the values are inert, the labels bold."""
        sep = SEP.get(language, ":")
        body = [f"### {self.title}", *(f"**{label}**{sep}{value}" for label, value in self.lines)]
        return "\n\n".join([*body, f"[{self.link_label}]({self.link})"])


def local_time(value: str | datetime, zone: tzinfo) -> str:
    """An RFC 3339 time (or a datetime) as people read it in `zone`."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return local_text(moment, zone)


def notice(message: dict[str, Any], context: NoticeContext, language: Language) -> Notice:
    """The notice of a webhook message (an alert or a ticket change)."""
    language = language if language in LABEL else "zh-CN"
    if "ticket" in message:
        return _ticket_notice(message, context, language)
    return _alert_notice(message, context, language)


def _where(institution: dict[str, Any], fallback: str) -> str:
    name = inert(institution.get("name") or fallback, 60)
    town = institution.get("town")
    return f"{name}（{inert(town, 30)}）" if town else name


def _place(device: Device | None) -> str | None:
    if device is None:
        return None
    where = device.location
    parts = [p for p in (where.building, where.floor, where.room) if p]
    return " ".join(inert(p, 40) for p in parts) or None


def _alert_notice(message: dict[str, Any], context: NoticeContext, lang: Language) -> Notice:
    alert = message["alert"]
    label = LABEL[lang]
    institution = message.get("institution") or {}
    kind = KIND[lang].get(alert["kind"], inert(alert["kind"], 40))
    severity = SEVERITY[lang].get(alert["severity"], inert(alert["severity"], 20))
    action = ACTION[lang].get(message["action"], inert(message["action"], 30))
    title = (
        f"【{severity}】{kind} · {action}" if lang == "zh-CN" else f"[{severity}] {kind} · {action}"
    )
    detail = read_detail(alert.get("detail") or "", lang)
    device = context.places(alert["device"])
    lines = [(label["institution"], _where(institution, alert["institution"]))]
    if (place := _place(device)) is not None:
        lines.append((label["place"], place))
    if alert.get("zone"):
        lines.append((label["zone"], inert(alert["zone"], 40)))
    lines.append((label["device"], inert(alert["device"], 64)))
    if detail.value or alert.get("value") is not None:
        lines.append((label["value"], detail.value or inert(f"{alert['value']:g}", 20)))
    if detail.threshold:
        lines.append((label["threshold"], detail.threshold))
    if detail.text:
        lines.append((label["detail"], detail.text))
    lines.append((label["time"], local_time(message["at"], context.zone)))
    lines.append((label["level"], LEVEL[lang][min(alert.get("escalation_level", 0), 3)]))
    principal = institution.get("principal") or {}
    if principal.get("name"):
        phone = f" {inert(principal['phone'], 20)}" if principal.get("phone") else ""
        lines.append((label["principal"], inert(principal["name"], 30) + phone))
    if message.get("note"):
        lines.append((label["note"], f"{quoted(message['note'])}（{inert(message['actor'], 30)}）"))
    lines.append((label["id"], inert(alert["id"], 40)))
    link = f"{context.console_url}/alerts/{_path(alert['id'])}"
    return Notice(title, lines, link, label["open"])


def _ticket_notice(message: dict[str, Any], context: NoticeContext, lang: Language) -> Notice:
    ticket = message["ticket"]
    label = LABEL[lang]
    institution = message.get("institution") or {}
    major = label["major"] if ticket.get("major_hazard") else ""
    action = TICKET_ACTION[lang].get(message["action"], inert(message["action"], 30))
    title = f"{major}{label['ticket_title']} · {action}"
    responsible = (
        f"{inert(ticket['responsible_unit'], 60)} {inert(ticket['responsible_person'], 30)}"
    )
    lines = [
        (label["institution"], _where(institution, ticket["institution"])),
        (label["hazard"], quoted(ticket["title"])),
        (label["responsible"], responsible),
        (label["due"], local_time(ticket["due_at"], context.zone)),
    ]
    if message.get("at"):
        lines.append((label["time"], local_time(message["at"], context.zone)))
    level = ticket.get("escalation_level", 0)
    if level:
        lines.append((label["ticket_level"], TICKET_LEVEL[lang][min(level, 3)]))
    if message.get("note"):
        lines.append((label["note"], f"{quoted(message['note'])}（{inert(message['actor'], 30)}）"))
    lines.append((label["ticket"], inert(ticket["id"], 40)))
    link = f"{context.console_url}/tickets/{_path(ticket['id'])}"
    return Notice(title, lines, link, label["open"])


def _path(identifier: str) -> str:
    """An id as a URL path segment (ids are ours: hex or digits; this keeps it so)."""
    return "".join(c for c in str(identifier) if c.isalnum() or c in "-_.")


# ---------------------------------------------------------------------- merged notices

MERGED_SHOWN = 5  # members listed by name; the rest are counted
COUNTED = {
    "zh-CN": {
        "device_offline": "{n} 台设备离线",
        "low_battery": "{n} 台设备电量低",
        "device_fault": "{n} 台设备故障",
        "tamper": "{n} 台设备被拆",
        "smoke_alarm": "{n} 个烟感报警",
        "fire_confirmed": "{n} 处火警确认",
        "gas_leak": "{n} 处燃气泄漏",
        "co_alarm": "{n} 处一氧化碳报警",
    },
    "en": {
        "device_offline": "{n} devices offline",
        "low_battery": "{n} devices with a low battery",
        "device_fault": "{n} device faults",
        "tamper": "{n} devices tampered with",
        "smoke_alarm": "{n} smoke alarms",
        "fire_confirmed": "{n} confirmed fires",
        "gas_leak": "{n} gas leaks",
        "co_alarm": "{n} CO alarms",
    },
}
MORE = {"zh-CN": "…等共 {n} 条", "en": "… {n} in all"}
LIST_LABEL = {"zh-CN": "在控制台查看全部", "en": "Open the list in the console"}


def merged_notice(
    messages: list[dict[str, Any]], context: NoticeContext, language: Language
) -> Notice:
    """Notices of one kind, action and town (or institution) as one: a count, the first few,
    a link to the list. `messages` are in log order and all alerts or all tickets."""
    lang = language if language in LABEL else "zh-CN"
    first, n = messages[0], len(messages)
    institution = first.get("institution") or {}
    town = f"（{inert(institution['town'], 30)}）" if institution.get("town") else ""
    if "ticket" in first:
        action = TICKET_ACTION[lang].get(first["action"], inert(first["action"], 30))
        title = f"{LABEL[lang]['ticket_title']} · {action} × {n}{town}"
        link = f"{context.console_url}/tickets"
    else:
        alert = first["alert"]
        kind, action = alert["kind"], first["action"]
        severity = SEVERITY[lang].get(alert["severity"], "")
        counted = COUNTED[lang].get(kind, "{n} " + inert(kind, 40)).format(n=n)
        if action != "raised":
            counted += " · " + ACTION[lang].get(action, inert(action, 30))
        title = f"【{severity}】{counted}{town}" if lang == "zh-CN" else f"[{severity}] {counted}"
        link = f"{context.console_url}/alerts?kind={_path(kind)}"
    lines = [(str(i), _member(m, context)) for i, m in enumerate(messages[:MERGED_SHOWN], 1)]
    if n > MERGED_SHOWN:
        lines.append(("…", MORE[lang].format(n=n)))
    return Notice(title, lines, link, LIST_LABEL[lang])


def _member(message: dict[str, Any], context: NoticeContext) -> str:
    """One member of a merged notice: where, what, when."""
    institution = message.get("institution") or {}
    item = message.get("alert") or message.get("ticket") or {}
    name = inert(institution.get("name") or item.get("institution", ""), 40)
    if "ticket" in message:
        what = quoted(item.get("title", ""), 40)
    else:
        place = _place(context.places(item["device"]))
        what = " ".join(x for x in (place, inert(item["device"], 64)) if x)
    when = local_time(message["at"], context.zone)[11:] if message.get("at") else ""
    return " · ".join(x for x in (name, what, when) if x)

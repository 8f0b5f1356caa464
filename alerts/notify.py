"""What each alert change sends where, and the message bodies of the webhook formats.

The outputs (alerts/outputs.py) read every change from the event log: MQTT gets each change
but repeats and test-window records, InfluxDB each but repeats, a webhook the changes people
should hear of, at its severity, escalation level and towns.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alerts.notices import NoticeContext, local_time, merged_notice, notice
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

# Robots refuse longer messages (WeCom: text 2,048 bytes, markdown 4,096; DingTalk 20,000).
MAX_TEXT_BYTES = 2000
MAX_MARKDOWN_BYTES = 4000
_PHONE = re.compile(r"\+?[0-9]{5,20}")


def mentions(message: dict[str, Any]) -> list[str]:
    """Phones to @-mention: the institution principal once the alert (or ticket) reached level 1
    (only a phone number: `@all` or a name in the registry's phone field mentions nobody)."""
    institution = message.get("institution") or {}
    principal = institution.get("principal") or {}
    level = (message.get("alert") or message.get("ticket") or {}).get("escalation_level", 0)
    phone = principal.get("phone")
    return [phone] if phone and _PHONE.fullmatch(phone) and level >= 1 else []


def text_zh(message: dict[str, Any]) -> str:
    """The notification in Simplified Chinese as plain text, with the default display."""
    return notice(message, NoticeContext(), "zh-CN").text("zh-CN")


def _cut(text: str, most_bytes: int) -> str:
    data = text.encode()
    if len(data) <= most_bytes:
        return text
    return data[: most_bytes - 3].decode(errors="ignore") + "…"


def render(
    hook: Webhook,
    message: dict[str, Any],
    now_ms: int | None = None,
    context: NoticeContext | None = None,
    more: Sequence[dict[str, Any]] = (),
) -> tuple[str, Any]:
    """The URL and JSON body for one webhook delivery (robots: of `message` and `more`
    merged into one, when given)."""
    context = context or NoticeContext()
    language = hook.language or context.language
    if more and hook.format != "generic":
        readable = merged_notice([message, *more], context, language)
        phones = sorted({p for m in (message, *more) for p in mentions(m)})
    else:
        readable = notice(message, context, language)
        phones = mentions(message)
    url = str(hook.url)
    if hook.format == "generic":
        # The machine fields as they were; people's text, local time and the link added.
        added = {
            "text": readable.text(language),
            "at_local": local_time(message["at"], context.zone) if message.get("at") else None,
            "link": readable.link,
        }
        return url, message | added
    if hook.format == "wecom":
        if hook.msgtype == "markdown":  # WeCom markdown cannot mention by mobile number
            content = _cut(readable.markdown(language), MAX_MARKDOWN_BYTES)
            return url, {"msgtype": "markdown", "markdown": {"content": content}}
        content = _cut(readable.text(language), MAX_TEXT_BYTES)
        return url, {
            "msgtype": "text",
            "text": {"content": content, "mentioned_mobile_list": phones},
        }
    at = "".join(f" @{p}" for p in phones)  # DingTalk mentions only who is named in the text too
    if hook.msgtype == "markdown":
        text = _cut(readable.markdown(language), MAX_MARKDOWN_BYTES) + at
        body: dict[str, Any] = {
            "msgtype": "markdown",
            "markdown": {"title": readable.title, "text": text},
        }
    else:
        body = {
            "msgtype": "text",
            "text": {"content": _cut(readable.text(language), MAX_TEXT_BYTES) + at},
        }
    body["at"] = {"atMobiles": phones, "isAtAll": False}
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

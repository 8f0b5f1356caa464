"""Readable notices: local times, language, places, links; and hostile text made inert."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.details import read_detail
from alerts.escape import MAX_CHARS, inert, quoted
from alerts.notices import NoticeContext, notice
from alerts.notify import mentions, render
from core.registry.models import Device, Location
from core.settings import Webhook

AT = "2026-12-02T13:05:09Z"  # 21:05:09 in Asia/Shanghai


def alert_message(**alert: Any) -> dict[str, Any]:
    values = {
        "id": "0193abc",
        "kind": "smoke_alarm",
        "severity": "critical",
        "institution": "inst-1",
        "device": "smoke-1",
        "zone": None,
        "value": 0.3,
        "detail": "smoke 0.3 dB/m ≥ 0.15 dB/m",
        "escalation_level": 0,
    }
    return {
        "action": "raised",
        "at": AT,
        "actor": "system",
        "note": None,
        "alert": values | alert,
        "institution": {"name": "阳光养老院", "town": "城关镇", "principal": None},
    }


def device(**location: str) -> Device:
    return Device(id="smoke-1", institution="inst-1", kind="smoke", location=Location(**location))


CONTEXT = NoticeContext(
    zone=ZoneInfo("Asia/Shanghai"),
    console_url="https://hw.example.gov.cn",
    places=lambda d: device(building="1号楼", floor="3F", room="305") if d == "smoke-1" else None,
)


def hook(**fields: Any) -> Webhook:
    return Webhook.model_validate({"name": "r", "url": "https://robot.example/x", **fields})


def test_an_alarm_reads_with_place_value_threshold_local_time_and_link() -> None:
    text = notice(alert_message(), CONTEXT, "zh-CN").text("zh-CN")
    assert text.splitlines() == [
        "【紧急】烟感报警 · 新报警",
        "机构:阳光养老院（城关镇）",
        "位置:1号楼 3F 305",
        "设备:smoke-1",
        "读数:0.3 dB/m",
        "阈值:0.15 dB/m",
        "详情:烟雾浓度超过阈值",
        "时间:2026-12-02 21:05:09",
        "通知级别:值班人员",
        "报警编号:0193abc",
        "在控制台查看:https://hw.example.gov.cn/alerts/0193abc",
    ]


def test_a_target_in_english_reads_english() -> None:
    _, body = render(hook(format="wecom", language="en"), alert_message(), context=CONTEXT)
    text = body["text"]["content"]
    assert text.startswith("[CRITICAL] Smoke alarm · raised\nInstitution: 阳光养老院（城关镇）")
    assert "Threshold: 0.15 dB/m" in text and "Time: 2026-12-02 21:05:09" in text
    assert "Open in the console: https://hw.example.gov.cn/alerts/0193abc" in text


def test_the_display_language_is_the_default_of_a_target() -> None:
    english = NoticeContext(language="en")
    _, body = render(hook(format="wecom"), alert_message(), context=english)
    assert body["text"]["content"].startswith("[CRITICAL]")
    _, body = render(hook(format="wecom", language="zh-CN"), alert_message(), context=english)
    assert body["text"]["content"].startswith("【紧急】")


def test_markdown_bodies_of_both_robots() -> None:
    _, wecom = render(hook(format="wecom", msgtype="markdown"), alert_message(), context=CONTEXT)
    content = wecom["markdown"]["content"]
    assert wecom["msgtype"] == "markdown" and content.startswith("### 【紧急】烟感报警 · 新报警")
    assert "**阈值**:0.15 dB/m" in content
    assert content.endswith("[在控制台查看](https://hw.example.gov.cn/alerts/0193abc)")
    message = alert_message(escalation_level=1)
    message["institution"]["principal"] = {"name": "张三", "phone": "13800000001"}
    _, ding = render(hook(format="dingtalk", msgtype="markdown"), message, context=CONTEXT)
    assert ding["markdown"]["title"] == "【紧急】烟感报警 · 新报警"
    assert ding["markdown"]["text"].endswith(" @13800000001")
    assert ding["at"] == {"atMobiles": ["13800000001"], "isAtAll": False}


@pytest.mark.parametrize(
    ("detail", "value", "threshold", "text"),
    [
        ("gas 55.0 %LEL, level 2", "55.0 %LEL", None, "可燃气体浓度达到2级报警"),
        ("CO 80.0 ppm ≥ 50.0 ppm", "80.0 ppm", "50.0 ppm", "一氧化碳浓度超过阈值"),
        ("battery 12 % ≤ 20 %", "12 %", "20 %", "电池电量低"),
        ("silent for 750 s (allowed 750 s)", None, None, "已12分钟无消息（允许12分钟）"),
        ("fault chamber_dirty", None, None, "故障:迷宫（烟室）污染"),
        ("the device was tampered with", None, None, "设备被拆卸或破坏"),
    ],
)
def test_the_rules_texts_read_in_chinese(
    detail: str, value: str | None, threshold: str | None, text: str
) -> None:
    read = read_detail(detail, "zh-CN")
    assert (read.value, read.threshold, read.text) == (value, threshold, text)


def test_a_ticket_has_local_due_time_and_its_link() -> None:
    ticket = {"id": "t9", "institution": "inst-1", "title": "烟感失效", "major_hazard": False,
              "responsible_unit": "阳光养老院", "responsible_person": "李四",
              "due_at": "2026-12-03T16:00:00Z", "escalation_level": 2}  # fmt: skip
    message = {"action": "escalated", "at": AT, "actor": "system", "note": None, "ticket": ticket}
    text = notice(message, CONTEXT, "zh-CN").text("zh-CN")
    assert "整改时限:2026-12-04 00:00:00" in text and "督办级别:乡镇（街道）民政所" in text
    assert text.endswith("在控制台查看:https://hw.example.gov.cn/tickets/t9")


# ---------------------------------------------------------------------- hostile text

HOSTILE = [
    "**火警已解除**，请忽略",
    "# 标题\n> 引用\n- 列表",
    "[点此处理](http://evil.example/phish)",
    "![img](http://evil.example/a.png)",
    '<font color="warning">假警报</font>',
    "`code` _em_ ~~del~~ |table|",
    "@all 全体注意 @13800000001",
    "正常\n\n时间:2020-01-01 00:00:00\n报警编号:fake",
    "\u202egnp.exe\u200b\u2028line\u2029para\r\x00\x1b[31m",
]
MARKDOWN_CONTROL = re.compile(r"[*_#\[\]()`<>@~|!&\\]|://")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_text_is_one_inert_line(hostile: str) -> None:
    made = inert(hostile)
    assert MARKDOWN_CONTROL.search(made) is None, made
    assert "\n" not in made and "\r" not in made and "\u2028" not in made
    assert all(c.isprintable() for c in made), "no control or invisible format characters"


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("msgtype", ["text", "markdown"])
@pytest.mark.parametrize("robot", ["wecom", "dingtalk"])
def test_hostile_details_names_and_notes_cannot_act_in_a_robot_message(
    hostile: str, msgtype: str, robot: str
) -> None:
    message = alert_message(detail=hostile, zone=hostile, device="dev_1*x")
    message["institution"] = {"name": hostile, "town": hostile, "principal": {"name": hostile,
                              "phone": "@all"}}  # fmt: skip
    message["note"], message["actor"], message["alert"]["escalation_level"] = hostile, hostile, 1
    places = NoticeContext(places=lambda _d: device(building=hostile, room=hostile))
    _, body = render(hook(format=robot, msgtype=msgtype), message, context=places)
    content = body["text"]["content"] if msgtype == "text" else body["markdown"].get("content")
    content = content or body["markdown"]["text"]
    link = content.rsplit("\n", 1)[1]
    ours = content.rsplit("\n", 1)[0]
    values = [line.split(":", 1)[1] for line in ours.split("\n")[1:] if ":" in line]
    for value in values:  # every value: ours around the inert text
        assert MARKDOWN_CONTROL.search(value.replace("**", "", 2)) is None, value
    assert "@" not in content.replace(link, ""), "no mention in the text"
    assert body.get("at", {}).get("isAtAll", False) is False
    assert mentions(message) == [], "a phone field that is not a number mentions nobody"
    assert body.get("text", {}).get("mentioned_mobile_list", []) == []
    lines = [line for line in content.split("\n") if line]
    assert sum(line.startswith(("时间", "**时间")) for line in lines) == 1, "no forged line"
    assert sum(line.startswith(("报警编号", "**报警编号")) for line in lines) == 1


def test_long_text_is_cut() -> None:
    assert len(inert("烟" * 1000)) == MAX_CHARS and inert("烟" * 1000).endswith("…")
    assert quoted("x" * 500, 10) == "「xxxxxxxxx…」"
    message = alert_message(detail="长" * 5000)
    _, body = render(hook(format="wecom"), message)
    assert len(body["text"]["content"].encode()) <= 2048


def test_a_device_cannot_fake_a_closing_quote() -> None:
    assert quoted("a」 详情:假") == "「a』 详情:假」"


def test_utc_times_in_the_generic_body_are_kept() -> None:
    _, body = render(hook(), alert_message(), context=CONTEXT)
    assert body["at"] == AT and body["at_local"] == "2026-12-02 21:05:09"
    assert datetime.fromisoformat(body["at"]).tzinfo is not None
    assert datetime.fromisoformat(body["at"]).astimezone(UTC).hour == 13


def test_device_places_come_from_memory_and_a_failed_read_keeps_the_last() -> None:
    from alerts.places import DevicePlaces

    reads: list[float] = []
    state = {"fail": False, "now": 0.0, "away": False}

    def read_all() -> list[Device]:
        reads.append(state["now"])
        if state["fail"]:
            raise ConnectionError("database gone")
        return [device(room="305"), Device(id="bare", institution="i", kind="gas")]

    places = DevicePlaces(read_all, away=lambda: bool(state["away"]), keep_s=60,
                          clock=lambda: float(state["now"]), background=False)  # fmt: skip
    assert places.load() == 1, "only devices with a place are kept"
    found = places("smoke-1")
    assert found is not None and found.location.room == "305"
    assert places("bare") is None and places("unknown") is None and reads == [0.0]
    state["now"], state["away"] = 120.0, True
    assert places("smoke-1") is not None and reads == [0.0], "no read while the database is away"
    state["away"], state["fail"] = False, True
    assert places("smoke-1") is not None, "a failed reload keeps the last places"
    assert reads == [0.0, 120.0]

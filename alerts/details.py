"""An alert's `detail` as people read it: the rules' own texts in Chinese or English, with the
value and threshold taken out; anything else (a device's words) quoted and made inert."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from alerts.escape import inert, quoted

Language = str  # "zh-CN" or "en" ([display] language, Webhook.language)


@dataclass(frozen=True, slots=True)
class Detail:
    """What the detail says: text, and the measured value and threshold where known."""

    text: str
    value: str | None = None
    threshold: str | None = None


def _minutes(seconds: str) -> str:
    return f"{float(seconds) / 60:.0f}"


FAULT_ZH = {
    "sensor_fault": "传感器故障",
    "chamber_dirty": "迷宫（烟室）污染",
    "end_of_life": "寿命到期",
    "low_battery": "电量低",
    "tamper": "被拆卸",
    "valve_fault": "切断阀故障",
    "comm_fault": "通信故障",
    "other": "其他",
}

_Make = Callable[[re.Match[str], bool], Detail]

# The texts of alerts/rules.py and alerts/engine.py, in order; `zh` tells the language.
_RULES: list[tuple[re.Pattern[str], _Make]] = [
    (
        re.compile(r"smoke ([\d.]+) dB/m ≥ ([\d.]+) dB/m"),
        lambda m, zh: Detail(
            "烟雾浓度超过阈值" if zh else "smoke above the threshold",
            f"{m[1]} dB/m",
            f"{m[2]} dB/m",
        ),
    ),
    (
        re.compile(r"gas ([\d.]+) %LEL, level (\d)"),
        lambda m, zh: Detail(
            f"可燃气体浓度达到{m[2]}级报警" if zh else f"combustible gas at alarm level {m[2]}",
            f"{m[1]} %LEL",
        ),
    ),
    (
        re.compile(r"CO ([\d.]+) ppm ≥ ([\d.]+) ppm"),
        lambda m, zh: Detail(
            "一氧化碳浓度超过阈值" if zh else "carbon monoxide above the threshold",
            f"{m[1]} ppm",
            f"{m[2]} ppm",
        ),
    ),
    (
        re.compile(r"battery ([\d.]+) % ≤ ([\d.]+) %"),
        lambda m, zh: Detail("电池电量低" if zh else "battery low", f"{m[1]} %", f"{m[2]} %"),
    ),
    (
        re.compile(r"silent for (\d+) s \(allowed (\d+) s\)"),
        lambda m, zh: Detail(
            f"已{_minutes(m[1])}分钟无消息（允许{_minutes(m[2])}分钟）"
            if zh
            else f"silent for {_minutes(m[1])} min (allowed {_minutes(m[2])} min)"
        ),
    ),
    (
        re.compile(r"the device reported itself offline \((.*)\)"),
        lambda m, zh: Detail(
            ("设备报告离线 " if zh else "the device reported itself offline ") + quoted(m[1], 40)
        ),
    ),
    (
        re.compile(r"battery low \((device|fault code)\)"),
        lambda m, zh: Detail("设备报告电量低" if zh else "the device reports a low battery"),
    ),
    (
        re.compile(r"the device was tampered with"),
        lambda m, zh: Detail("设备被拆卸或破坏" if zh else "the device was tampered with"),
    ),
    (
        re.compile(r"fault ([a-z_]+)"),
        lambda m, zh: Detail(
            f"故障:{FAULT_ZH.get(m[1], inert(m[1], 40))}" if zh else f"fault {inert(m[1], 40)}"
        ),
    ),
    (
        re.compile(
            r"(\d+) detectors of (?:zone (.*)|the institution \(no zone set\)) in smoke "
            r"alarm: (.*)"
        ),
        lambda m, zh: Detail(
            f"{m[1]}个探测器同时报警:{quoted(m[3], 80)}"
            if zh
            else f"{m[1]} detectors in alarm: {quoted(m[3], 80)}"
        ),
    ),
    (
        re.compile(r"(\d+) smoke alarms in 24 h cleared without confirmation"),
        lambda m, zh: Detail(
            f"24小时内{m[1]}次未经确认的烟感报警，疑似误报，需维护"
            if zh
            else f"{m[1]} unconfirmed smoke alarms in 24 h: maintenance needed"
        ),
    ),
]


def read_detail(detail: str, language: Language) -> Detail:
    """The detail in `language`; a text the rules did not write is a quote of the device."""
    zh = language != "en"
    for pattern, make in _RULES:
        found = pattern.fullmatch(detail)
        if found:
            return make(found, zh)
    if not detail:
        return Detail("")
    return Detail(("设备上报 " if zh else "the device says ") + quoted(detail))

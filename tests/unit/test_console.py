"""The console's pages and files: both languages complete, every text from the catalogues,
nothing loaded from elsewhere, the pages locked to this origin."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from api import console
from api.app import create_app
from api.deps import ApiContext
from core.settings import DisplaySettings
from tickets.models import TicketStatus

STATIC = console.HERE / "static"
TEMPLATES = console.HERE / "templates"


def make_app(**display: Any) -> FastAPI:
    context = ApiContext(
        admin_token=None,
        registry=cast(Any, None),
        dead_letters=cast(Any, None),
        presence=cast(Any, None),
        metrics=CollectorRegistry(),
        display=DisplaySettings(**display),
    )
    return create_app(context)


async def get(app: FastAPI, path: str, cookies: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://hazardwatch", cookies=cookies
    ) as client:
        return await client.get(path)


def _config(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="hw-config">(.*?)</script>', html, re.S)
    assert found, "the page carries its settings"
    loaded: dict[str, Any] = json.loads(found.group(1))
    return loaded


def test_both_catalogues_have_the_same_texts_and_none_is_empty() -> None:
    zh, en = console.messages("zh-CN"), console.messages("en")
    assert zh.keys() == en.keys()
    assert all(v.strip() for v in [*zh.values(), *en.values()])
    assert zh["kind.smoke_alarm"] == "烟感报警" and en["kind.smoke_alarm"] == "Smoke alarm"
    # The placeholders of a text are the same in both languages.
    for key in zh:
        assert set(re.findall(r"\{(\w+)\}", zh[key])) == set(re.findall(r"\{(\w+)\}", en[key])), key


def test_every_text_the_pages_and_scripts_ask_for_is_in_the_catalogue() -> None:
    known = console.messages("zh-CN").keys()
    asked: set[str] = set()
    for path in [*TEMPLATES.glob("*.html"), *STATIC.glob("*.js")]:
        asked |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_.-]+)["']""", path.read_text()))
    asked = {key for key in asked if not key.endswith(".")}  # t("severity." + name)
    assert asked, "the files were read"
    assert asked - known == set()
    # Texts built from a value (`kind.${alert.kind}`): every value of the enums is there.
    for prefix, values in {
        "kind": ["smoke_alarm", "fire_confirmed", "gas_leak", "co_alarm", "device_offline"],
        "severity": ["critical", "major", "minor", "warning"],
        "state": ["active", "acknowledged", "cleared", "resolved"],
        "device": ["smoke", "gas", "co", "multi"],
        "status": ["alarm", "online", "offline", "fault", "low_battery", "unknown"],
        "field": ["smoke_db_m", "gas_lel_pct", "co_ppm", "temperature_c", "battery_pct"],
        "ticket.status": [s.value for s in TicketStatus],
    }.items():
        assert {f"{prefix}.{value}" for value in values} <= known


def test_no_file_of_the_console_loads_anything_from_elsewhere() -> None:
    outside = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.I)
    for path in [*TEMPLATES.glob("*.html"), *STATIC.glob("*.js"), *STATIC.glob("*.css")]:
        assert not outside.search(path.read_text()), f"{path.name} names another site"


async def test_a_page_is_in_chinese_by_default_and_locked_to_this_origin() -> None:
    app = make_app()
    answer = await get(app, "/board")
    assert answer.status_code == 200
    assert '<html lang="zh-CN">' in answer.text
    assert "报警值守台" in answer.text
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    config = _config(answer.text)
    assert config["timezone"] == "Asia/Shanghai" and config["language"] == "zh-CN"


async def test_the_language_follows_the_persons_choice_then_the_centres_setting() -> None:
    assert '<html lang="en">' in (await get(make_app(language="en"), "/login")).text
    app = make_app(timezone="Asia/Urumqi")
    english = await get(app, "/board", cookies={console.LANGUAGE_COOKIE: "en"})
    assert '<html lang="en">' in english.text and "Alarm board" in english.text
    assert _config(english.text)["timezone"] == "Asia/Urumqi"
    odd = await get(app, "/board", cookies={console.LANGUAGE_COOKIE: "xx<script>"})
    assert '<html lang="zh-CN">' in odd.text


async def test_switching_the_language_goes_back_to_a_page_of_this_site_only() -> None:
    app = make_app()
    answer = await get(app, "/language?to=en&back=/alerts/a1")
    assert answer.status_code == 303 and answer.headers["location"] == "/alerts/a1"
    assert f"{console.LANGUAGE_COOKIE}=en" in answer.headers["set-cookie"]
    assert "samesite=strict" in answer.headers["set-cookie"].lower()
    for elsewhere in ("//evil.example", "https://evil.example", "javascript:alert(1)"):
        answer = await get(app, f"/language?to=en&back={elsewhere}")
        assert answer.headers["location"] == "/board", elsewhere
    assert (await get(app, "/language?to=fr")).status_code == 422


@pytest.mark.parametrize("focus", ["a1", '"><script>alert(1)<', '"><img src=x onerror=1>'])
async def test_the_alert_page_picks_out_the_alarm_without_letting_its_id_out(focus: str) -> None:
    answer = await get(make_app(), f"/alerts/{quote(focus, safe='')}")
    assert answer.status_code == 200
    assert _config(answer.text)["focus"] == focus
    assert "<script>alert(1)" not in answer.text and "<img" not in answer.text


async def test_the_root_leads_to_the_board_and_the_files_are_served() -> None:
    app = make_app()
    root = await get(app, "/")
    assert root.status_code == 303 and root.headers["location"] == "/board"
    script = await get(app, "/static/board.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    siren = await get(app, "/static/siren.wav")
    assert siren.status_code == 200 and siren.content[:4] == b"RIFF"
    assert (await get(app, "/static/../__init__.py")).status_code == 404


def test_the_siren_is_a_short_sound_made_here() -> None:
    path: Path = STATIC / "siren.wav"
    assert 1_000 < path.stat().st_size < 64_000


async def test_the_institution_and_device_pages_carry_their_id_and_only_the_device_charts() -> None:
    app = make_app()
    listed = await get(app, "/institutions")
    assert listed.status_code == 200 and "institutions.js" in listed.text
    home = await get(app, "/institutions/inst-1")
    assert _config(home.text)["institution"] == "inst-1"
    assert "back=/institutions/inst-1" in home.text  # the language switch comes back here
    device = await get(app, "/devices/gas-1%3Cx%3E", cookies={console.LANGUAGE_COOKIE: "en"})
    assert device.status_code == 200 and '<html lang="en">' in device.text
    config = _config(device.text)
    assert config["device"] == "gas-1<x>" and "thresholds" in config
    assert "<x>" not in device.text  # escaped in the title and the settings
    assert device.headers["Content-Security-Policy"] == console.CSP
    charted = [page.text for page in (listed, home, device) if "vendor/echarts.min.js" in page.text]
    assert charted == [device.text]


def test_the_vendored_echarts_is_recorded_with_its_licence() -> None:
    vendor = STATIC / "vendor"
    script = (vendor / "echarts.min.js").read_text()
    readme = (vendor / "README.md").read_text()
    version = re.search(r"\| `echarts.min.js` \|[^|]*\| ([0-9.]+) \|", readme)
    assert version, "the README names the version"
    assert f'version="{version.group(1)}"' in script or f'"{version.group(1)}"' in script
    assert "Apache License" in (vendor / "LICENSE-echarts.txt").read_text()
    assert (vendor / "NOTICE-echarts.txt").read_text().startswith("Apache ECharts")

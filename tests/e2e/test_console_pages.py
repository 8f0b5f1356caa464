"""The institution and device pages in a real browser (Debian's Chromium through Playwright),
against `hazardwatch run` with real Mosquitto and InfluxDB: devices' states after their
messages, the readings chart fed by the API with its threshold lines, nothing fetched from
elsewhere, nothing wider than a phone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.test_console import PASSWORD, Outside, _log_in
from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import ServiceProcess, change
from tests.integration.sites import Site


def _browse(browser: Browser, service: ServiceProcess, **options: Any) -> tuple[
    BrowserContext, Page, Outside, list[str]
]:  # fmt: skip
    context = browser.new_context(locale="zh-CN", **options)
    outside = Outside(service.base)
    context.on("request", outside)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, outside, errors


def _no_wider_than(page: Page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide on a {width} px phone"


def test_the_institution_page_shows_each_devices_state_from_its_messages(
    site_factory: Any, browser: Browser
) -> None:
    site: Site = site_factory()
    service = site.service
    service.add_user("zhao", "duty_officer", password=PASSWORD)
    context, page, outside, errors = _browse(
        browser, service, viewport={"width": 1280, "height": 900}
    )
    _log_in(page, service.base, "zhao")
    page.get_by_role("link", name="机构").click()
    home = page.locator('li[data-id="inst-1"]')
    expect(home.locator("a.title")).to_have_text("阳光养老院")
    home.locator("a.title").click()
    expect(page).to_have_url(f"{service.base}/institutions/inst-1")
    expect(page.locator("#name")).to_have_text("阳光养老院")
    expect(page.locator("#device-smoke-1")).to_be_visible()

    # With the page open: a reading, a fault, a low battery, and a device that falls silent.
    site.send("smoke-1", "telemetry", {"smoke_db_m": 0.03, "battery_pct": 88.0})
    site.send("smoke-2", "event", {"type": "fault", "code": "sensor_fault"})
    site.send("smoke-9", "telemetry", {"battery_pct": 7.0})
    site.send("quiet-1", "telemetry", {})  # heartbeat 2 s: offline a few seconds later
    site.stream.wait_for(change("raised", "device_fault", "smoke-2"), "the fault")
    site.stream.wait_for(change("raised", "low_battery", "smoke-9"), "the low battery")
    site.stream.wait_for(change("raised", "device_offline", "quiet-1"), "quiet-1 offline")

    def chips(device: str) -> Any:
        return page.locator(f"#device-{device} .chip")

    expect(chips("quiet-1")).to_have_text(["离线"], timeout=10_000)
    expect(page.locator("#device-quiet-1")).to_have_class(re.compile(r"\bstatus-offline\b"))
    expect(chips("smoke-2")).to_contain_text(["故障"])
    expect(page.locator("#device-smoke-2")).to_have_class(re.compile(r"\bstatus-fault\b"))
    expect(chips("smoke-9")).to_contain_text(["低电量"])
    expect(chips("smoke-1")).to_have_text(["在线"])
    expect(page.locator("#device-smoke-1")).to_contain_text("88 %")
    expect(page.locator("#device-smoke-1")).to_contain_text("0.03 dB/m")

    # The online rate and the open alarms are those the API gives this institution.
    devices = service.api("GET", "/api/v1/devices", params={"institution": "inst-1"}).json()
    opened = service.api(
        "GET", "/api/v1/alerts", params={"state": "open", "institution": "inst-1"}
    ).json()
    offline = {a["device"] for a in opened if a["kind"] == "device_offline"}
    online = [d for d in devices if d["online"] is True and d["id"] not in offline]
    assert 0 < len(online) < len(devices)
    expect(page.locator("#online-rate")).to_have_text(
        f"{round(100 * len(online) / len(devices))} %"
    )
    expect(page.locator("#alarms-count")).to_have_text(str(len(opened)))
    statuses = ("open", "assigned", "rectifying", "awaiting_verification")

    def tickets() -> list[dict[str, Any]]:
        params = [("institution", "inst-1"), *(("status", s) for s in statuses)]
        found: list[dict[str, Any]] = service.api("GET", "/api/v1/tickets", params=params).json()
        return found

    wait_until(lambda: len(tickets()) > 0, timeout=10, what="the fault's ticket")
    expect(page.locator("#tickets li")).to_have_count(len(tickets()))

    # Another institution's page is not this user's: a duty officer sees it, an institution
    # user does not (the API says 404, the page says so).
    page.goto(f"{service.base}/institutions/inst-2")
    expect(page.locator("#name")).to_have_text("东城敬老院")
    assert outside.seen == [], f"requests left the origin: {outside.seen}"
    assert errors == [], errors
    context.close()


def _readings(site: Site, device: str, values: list[float]) -> list[datetime]:
    """Telemetry of `device` 7 minutes apart, the last one now; their times."""
    now = datetime.now(UTC).replace(microsecond=0)
    times = [now - timedelta(minutes=7 * (len(values) - 1 - i)) for i in range(len(values))]
    for at, value in zip(times, values, strict=True):
        site.send(device, "telemetry", {"ts": at.isoformat(), "gas_lel_pct": value})
    return times


def test_the_device_page_charts_the_apis_points_with_the_threshold_lines(
    site_factory: Any, browser: Browser, tmp_path: Path
) -> None:
    site: Site = site_factory()
    service = site.service
    service.add_user("wu", "institution", "--institution", "inst-1", password=PASSWORD)
    # A device with its own gas threshold, beside gas-1 which has the centre's.
    extra = tmp_path / "gas-7.yaml"
    extra.write_text(
        "devices:\n  - {id: gas-7, institution: inst-1, kind: gas,"
        " thresholds: {gas_lel_pct: 12.5}}\n"
    )
    service.hazardwatch("registry", "import", str(extra))
    sent = _readings(site, "gas-1", [2.0, 3.5, 4.0, 6.5, 1.0])

    def answer() -> dict[str, Any]:
        found: dict[str, Any] = service.api(
            "GET", "/api/v1/devices/gas-1/readings", params={"fields": "gas_lel_pct"}
        ).json()
        return found

    wait_until(lambda: len(answer()["fields"]["gas_lel_pct"]) > 0, timeout=10, what="readings")
    every_ms = answer()["every_s"] * 1000
    buckets = {int(at.timestamp() * 1000) // every_ms for at in sent}
    wait_until(
        lambda: len(answer()["fields"]["gas_lel_pct"]) == len(buckets),
        timeout=10,
        what="every reading in InfluxDB",
    )

    context, page, outside, errors = _browse(
        browser, service, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True
    )
    _log_in(page, service.base, "wu")
    page.goto(f"{service.base}/devices/gas-1")
    chart = page.locator("#chart-gas_lel_pct")
    expect(chart).to_have_attribute("data-points", str(len(buckets)), timeout=10_000)
    config = page.evaluate("JSON.parse(document.getElementById('hw-config').textContent)")
    option = page.evaluate(
        """() => {
        const o = echarts.getInstanceByDom(document.getElementById('chart-gas_lel_pct'))
          .getOption();
        return { data: o.series[0].data, lines: o.series[0].markLine.data.map((d) => d.yAxis) };
    }"""
    )
    assert len(option["data"]) == len(buckets)
    assert sorted(v for _, v in option["data"]) == sorted(
        v for _, v in answer()["fields"]["gas_lel_pct"]
    )
    assert option["lines"] == [
        config["thresholds"]["gas_lel_pct"],
        config["thresholds"]["gas_lel_pct_critical"],
    ]
    expect(page.locator("#every")).to_contain_text(str(every_ms // 60_000))
    expect(page.locator("#institution-link")).to_have_text("阳光养老院")
    _no_wider_than(page, 360)

    # Seven days: the same readings in larger buckets, as the API gives them for that range.
    page.get_by_role("button", name="7 天").click()
    expect(page.locator("#charts")).to_have_attribute("data-range", "7d")
    week = service.api(
        "GET",
        "/api/v1/devices/gas-1/readings",
        params={
            "fields": "gas_lel_pct",
            "from": (datetime.now(UTC) - timedelta(days=7)).isoformat(),
        },
    ).json()
    assert week["every_s"] > every_ms // 1000
    expect(chart).to_have_attribute("data-points", str(len(week["fields"]["gas_lel_pct"])))

    # gas-7's own threshold is drawn instead of the centre's; it has sent nothing.
    page.goto(f"{service.base}/devices/gas-7")
    own = page.locator("#chart-gas_lel_pct")
    expect(own).to_have_attribute("data-points", "0", timeout=10_000)
    expect(own).to_have_attribute(
        "data-thresholds", f"12.5,{config['thresholds']['gas_lel_pct_critical']}"
    )
    _no_wider_than(page, 360)

    # The institution page on the phone too.
    page.goto(f"{service.base}/institutions/inst-1")
    expect(page.locator("#device-gas-1")).to_be_visible()
    _no_wider_than(page, 360)
    # Another institution's device is not for this user: the API's 404, said on the page.
    page.goto(f"{service.base}/devices/smoke-21")
    expect(page.locator("#notice")).to_have_text("没有该设备，或无权查看")
    assert outside.seen == [], f"requests left the origin: {outside.seen}"
    assert errors == [], errors
    context.close()

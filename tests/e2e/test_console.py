"""The duty console in a real browser (Debian's Chromium through Playwright), against
`hazardwatch run` with real Mosquitto and InfluxDB: what a duty officer sees and does."""

from __future__ import annotations

import re
import struct
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from playwright.sync_api import Browser, Page, Request, expect

from tests.integration.mqtt_tools import wait_until
from tests.integration.service_process import StreamReader, change
from tests.integration.sites import Site

PASSWORD = "值班室的长口令 2026"
SHANGHAI = ZoneInfo("Asia/Shanghai")


class Outside:
    """Every request a page makes that leaves the service's origin (none may)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.seen: list[str] = []

    def __call__(self, request: Request) -> None:
        url = request.url
        if not (url.startswith(self.origin + "/") or url.startswith(("data:", "blob:"))):
            self.seen.append(url)


def _log_in(page: Page, base: str, name: str) -> None:
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.locator("h1")).to_have_text("登录")
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    expect(page).to_have_url(f"{base}/board")


def test_a_duty_officer_sees_hears_and_acknowledges_a_smoke_alarm(
    site_factory: Any, browser: Browser
) -> None:
    site: Site = site_factory()
    service = site.service
    service.add_user("zhao", "duty_officer", password=PASSWORD)
    context = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    outside = Outside(service.base)
    context.on("request", outside)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # A wrong password is a clear no, in Chinese.
    page.goto(f"{service.base}/login")
    page.get_by_label("用户名").fill("zhao")
    page.get_by_label("密码").fill("not the password")
    page.get_by_role("button", name="登录").click()
    expect(page.locator("#login-error")).to_have_text("用户名或密码错误")

    _log_in(page, service.base, "zhao")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#connection")).to_have_text("实时连接正常")
    expect(page.locator("#empty")).to_be_visible()
    page.get_by_role("button", name="启用声音报警").click()
    expect(page.locator("#sound")).to_have_text("声音报警已启用")

    # A detector's alarm through Mosquitto: on the board, flashing and sounding.
    site.send("smoke-1", "event", {"type": "alarm", "source": "smoke"})
    raised = site.stream.wait_for(change("raised", "smoke_alarm", "smoke-1"), "the alarm")
    alert = raised["alert"]
    card = page.locator(f"#alarm-{alert['id']}")
    expect(card).to_be_visible(timeout=5000)
    expect(card).to_have_class(re.compile(r"\bflash\b"))
    expect(card.locator(".kind")).to_have_text("烟感报警")
    expect(card.locator(".badge")).to_have_text(
        "紧急" if alert["severity"] == "critical" else "重要"
    )
    expect(card.locator(".institution")).to_have_text("阳光养老院")
    expect(card.locator(".unacked")).to_have_text("未确认")
    expect(card).to_contain_text("城关镇")
    expect(card.locator('a[href="tel:13800000001"]')).to_have_text("13800000001")
    expect(card).to_contain_text("主要负责人 张三")
    shown = datetime.fromisoformat(alert["raised_at"]).astimezone(SHANGHAI)
    expect(card).to_contain_text(shown.strftime("%Y-%m-%d %H:%M:%S"))
    expect(page.locator("#count-total")).to_have_text("1")
    wait_until(
        lambda: page.evaluate("!document.getElementById('siren').paused"),
        timeout=5,
        what="the siren playing",
    )

    # Acknowledged with a note: it stops flashing and sounding, and says who and why.
    card.get_by_role("button", name="确认").click()
    page.get_by_label("处置说明（必填）").fill("已电话联系张三，现场核实")
    page.get_by_role("button", name="确认报警").click()
    expect(card.locator(".state")).to_have_text("已确认")
    expect(card).not_to_have_class(re.compile(r"\bflash\b"))
    expect(card).to_contain_text("已电话联系张三，现场核实")
    wait_until(
        lambda: page.evaluate("document.getElementById('siren').paused"),
        timeout=5,
        what="the siren stopping",
    )
    stored = service.api("GET", f"/api/v1/alerts/{alert['id']}").json()
    assert stored["acknowledged_by"] == "zhao"
    assert stored["note"] == "已电话联系张三，现场核实"

    # The other language, from the same page.
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(card.locator(".kind")).to_have_text("Smoke alarm")
    expect(page.locator("#connection")).to_have_text("Live connection up")
    expect(card.locator(".state")).to_have_text("Acknowledged")

    # The service goes away: the board says so at once, in red, instead of looking calm; an
    # alarm raised while it is away reaches the board once it is back (the broker kept it).
    site.stream.close()
    service.kill()
    expect(page.locator("#connection")).to_have_text(
        "Live connection lost, reconnecting — alarms may be missing!", timeout=10_000
    )
    expect(page.locator("body")).to_have_class(re.compile(r"\bdisconnected\b"))
    site.send("smoke-9", "event", {"type": "alarm", "source": "smoke"})
    service.start()
    site.stream = StreamReader(service)
    expect(page.locator("#connection")).to_have_text("Live connection up", timeout=30_000)
    late = page.locator('.alarm[data-device="smoke-9"]')
    expect(late).to_be_visible(timeout=15_000)
    expect(late.locator(".kind")).to_have_text("Smoke alarm")
    expect(page.locator("#count-total")).to_have_text("2")

    assert outside.seen == [], f"requests left the origin: {outside.seen}"
    assert errors == [], errors
    context.close()


def test_the_board_fits_a_phone(site_factory: Any, browser: Browser) -> None:
    site: Site = site_factory()
    service = site.service
    service.add_user("wu", "institution", "--institution", "inst-1", password=PASSWORD)
    context = browser.new_context(
        viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True
    )
    outside = Outside(service.base)
    context.on("request", outside)
    page = context.new_page()
    # A link that would lead away after the login (the browser reads "/\\x" as "//x") leads
    # to the board instead.
    for elsewhere in ("/%5Cevil.example/x", "/%09/evil.example", "https://evil.example/"):
        page.goto(f"{service.base}/login?next={elsewhere}")
        page.get_by_label("用户名").fill("wu")
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()
        expect(page).to_have_url(f"{service.base}/board")
    site.send("gas-1", "telemetry", {"gas_lel_pct": 30.0})
    site.send("smoke-21", "event", {"type": "alarm", "source": "smoke"}, institution="inst-2")
    gas = site.stream.wait_for(change("raised", "gas_leak", "gas-1"), "the gas leak")["alert"]
    card = page.locator(f"#alarm-{gas['id']}")
    expect(card).to_be_visible(timeout=5000)
    expect(card.locator(".kind")).to_have_text("燃气泄漏")
    expect(card).to_contain_text("%LEL")
    # Another institution's alarm is not this user's to see.
    site.stream.wait_for(change("raised", "smoke_alarm", "smoke-21"), "the other home's alarm")
    page.wait_for_timeout(500)
    expect(page.locator(".alarm")).to_have_count(1)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide on a 360 px phone"
    assert outside.seen == [], f"requests left the origin: {outside.seen}"
    context.close()


def _png(width: int, height: int) -> bytes:
    """A photo-sized PNG (one colour: small on disk, large in pixels)."""
    row = b"\x00" + b"\xc8\x50\x32" * width
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header."""
    at = 2
    while at < len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    raise AssertionError("no frame header")


def _step(page: Page, name: str, **fields: str) -> None:
    page.locator("#step-buttons").get_by_role("button", name=name, exact=True).click()
    for label, value in fields.items():
        page.locator("#step-form").get_by_label(label).fill(value)
    page.locator("#step-form").get_by_role("button", name="提交").click()
    expect(page.locator("#step-form")).to_be_hidden()


def test_a_fault_ticket_is_worked_to_close_out_by_the_right_people(
    site_factory: Any, browser: Browser, tmp_path: Path
) -> None:
    site: Site = site_factory()
    service = site.service
    service.add_user("zhao", "duty_officer", password=PASSWORD)
    service.add_user("wu", "institution", "--institution", "inst-1", password=PASSWORD)
    service.add_user("li", "town_office", "--town", "城关镇", password=PASSWORD)
    site.send("smoke-9", "event", {"type": "fault", "code": "sensor_fault"})

    def tickets() -> list[dict[str, Any]]:
        found = service.api("GET", "/api/v1/tickets", params={"device": "smoke-9"}).json()
        assert isinstance(found, list)
        return found

    wait_until(lambda: len(tickets()) == 1, timeout=10, what="the fault's ticket")
    ticket_id = tickets()[0]["id"]
    outside = Outside(service.base)

    # The duty officer finds it in the ledger and hands it to the home.
    desk = browser.new_context(viewport={"width": 1920, "height": 1080})
    desk.on("request", outside)
    page = desk.new_page()
    _log_in(page, service.base, "zhao")
    page.get_by_role("link", name="隐患台账").click()
    row = page.locator(f'.ticket-row[data-id="{ticket_id}"]')
    expect(row).to_contain_text("设备故障")
    expect(row).to_contain_text("阳光养老院")
    expect(row.locator(".status")).to_have_text("待派发")
    row.get_by_role("link").click()
    expect(page.locator("#ticket-status")).to_have_text("待派发")
    expect(page.locator("#trail")).to_contain_text("立案")
    _step(page, "派发", 责任人="吴主任", 联系电话="13900000009")
    expect(page.locator("#ticket-status")).to_have_text("已派发")
    expect(page.locator("#ticket-fields")).to_contain_text("吴主任")

    # The home, on a phone: starts, photographs the repair, reports it done with the photo.
    phone = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    phone.on("request", outside)
    page = phone.new_page()
    _log_in(page, service.base, "wu")
    page.goto(f"{service.base}/tickets/{ticket_id}")
    _step(page, "开始整改")
    expect(page.locator("#ticket-status")).to_have_text("整改中")
    expect(page.locator("input[type=file]")).to_have_attribute("capture", "environment")
    photo = tmp_path / "修复后.png"
    photo.write_bytes(_png(3200, 2400))
    page.locator("input[type=file]").set_input_files(str(photo))
    page.get_by_role("button", name="上传佐证").click()
    expect(page.locator("#upload-state")).to_have_text("已上传：修复后.jpg")
    _step(page, "整改完成", 整改措施="更换烟感探测器并测试报警功能")
    expect(page.locator("#ticket-status")).to_have_text("待验收")
    # Whoever reported the rectification is not offered its verification.
    expect(page.locator("#step-buttons button")).to_have_text(["备注"])
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the ticket page is {width} px wide on a 360 px phone"

    # The town office verifies on site and closes it out.
    town = browser.new_context(viewport={"width": 1280, "height": 800})
    town.on("request", outside)
    page = town.new_page()
    _log_in(page, service.base, "li")
    page.goto(f"{service.base}/tickets/{ticket_id}")
    _step(page, "验收通过（销号）", 说明="现场测试报警正常")
    expect(page.locator("#ticket-status")).to_have_text("已销号")
    expect(page.locator("#trail")).to_contain_text("现场测试报警正常")

    # The month's ledger, previewed and downloaded as Excel.
    page.get_by_role("link", name="报表").click()
    expect(page.locator("#report-title")).to_contain_text("重大事故隐患清单")
    expect(page.locator("#report-table tbody")).to_contain_text("阳光养老院")
    href = page.locator("#download-xlsx").get_attribute("href")
    assert href is not None and "format=xlsx" in href
    download = page.request.get(f"{service.base}{href}")
    assert download.status == 200
    assert download.body()[:2] == b"PK", "an XLSX file (a zip)"

    detail = service.api("GET", f"/api/v1/tickets/{ticket_id}").json()
    assert detail["status"] == "closed"
    assert (detail["rectified_by"], detail["verified_by"]) == ("wu", "li")
    assert detail["responsible_person"] == "吴主任"
    assert detail["measures"] == "更换烟感探测器并测试报警功能"
    rectified = next(e for e in detail["events"] if e["action"] == "rectified")
    [cited] = rectified["evidence"]
    assert cited["name"] == "修复后.jpg" and cited["content_type"] == "image/jpeg"
    stored = service.api("GET", f"/api/v1/tickets/{ticket_id}/attachments/{cited['sha256']}")
    assert max(_jpeg_size(stored.content)) == 1600, "the photo was made smaller on the phone"
    assert outside.seen == [], f"requests left the origin: {outside.seen}"

    # Users and roles are the admin's: the duty officer is told so; the admin adds and revokes.
    page = desk.pages[0]
    page.get_by_role("link", name="用户管理").click()
    expect(page.locator("#notice")).to_have_text("只有系统管理员可以管理用户")
    expect(page.locator("#add-user")).to_be_hidden()
    service.add_user("root", "admin", password=PASSWORD)
    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    page = admin.new_page()
    _log_in(page, service.base, "root")
    page.goto(f"{service.base}/admin/users")
    form = page.locator("#add-user")
    form.get_by_label("用户名").fill("chen")
    form.get_by_label("姓名").fill("陈护理长")
    form.get_by_label("角色").select_option("institution")
    form.get_by_label("所属机构（机构、维保单位用户）").select_option(label="阳光养老院")
    form.get_by_label("密码").fill("chen's own long passphrase")
    form.get_by_role("button", name="新增").click()
    row = page.locator('#users tr[data-name="chen"]')
    expect(row).to_contain_text("陈护理长")
    expect(row).to_contain_text("阳光养老院")
    expect(row).to_contain_text("正常")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="停用").click()
    expect(row).to_contain_text("已停用")
    refused = service.api(
        "POST",
        "/api/v1/session",
        json={"username": "chen", "password": "chen's own long passphrase"},
    )
    assert refused.status_code == 401
    for context in (desk, phone, town, admin):
        context.close()

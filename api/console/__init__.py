"""The duty console: pages for people, served by the service itself (docs/console.md).

Server-rendered Jinja2 pages with native ES modules for the live parts; every file is in this
package (no CDN, no build step), every text in the message catalogues `messages/*.json`
(zh-CN first, English the other). A page holds no data: its script reads the API with the
session cookie, so a page is the same for everyone and the API decides what each user sees.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Cookie, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.deps import ContextDep

HERE = Path(__file__).parent
LANGUAGES = ("zh-CN", "en")
Language = Literal["zh-CN", "en"]
LANGUAGE_COOKIE = "hw_lang"
STATIC_PATH = "/static"
# Pages may load and connect to this origin only; nothing may frame them.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


@cache
def messages(language: Language) -> dict[str, str]:
    """The catalogue of one language."""
    loaded: dict[str, str] = json.loads((HERE / "messages" / f"{language}.json").read_text())
    return loaded


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        auto_reload=False,
    )


def static_files() -> StaticFiles:
    """The console's scripts, styles and sounds."""
    return StaticFiles(directory=HERE / "static")


def language_of(context: ContextDep, chosen: str | None) -> Language:
    """The language a person chose (cookie), else the centre's default."""
    if chosen == "en":
        return "en"
    if chosen == "zh-CN":
        return "zh-CN"
    return context.display.language


def page(
    context: ContextDep, language: Language, template: str, back: str, **values: Any
) -> HTMLResponse:
    """A page in `language`, with what its script needs to know; `back`: its own path (the
    language switch returns to it)."""
    catalogue = messages(language)
    config = {
        "language": language,
        "timezone": context.display.timezone,
        "messages": catalogue,
        **values,
    }

    def t(key: str, **parts: str) -> str:
        text = catalogue.get(key, key)
        return text.format(**parts) if parts else text

    html = (
        _templates()
        .get_template(template)
        .render(
            t=t,
            lang=language,
            other="en" if language == "zh-CN" else "zh-CN",
            config=_script_safe(json.dumps(config, ensure_ascii=False)),
            static=STATIC_PATH,
            back=quote(back, safe="/"),
            **values,
        )
    )
    return HTMLResponse(html, headers=HEADERS)


def _script_safe(text: str) -> str:
    """JSON that no value can end its <script> element in (nor open a comment)."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


LanguageCookie = Annotated[str | None, Cookie(alias=LANGUAGE_COOKIE)]


@router.get("/")
def home() -> RedirectResponse:
    """The board is the console's first page."""
    return RedirectResponse("/board", status_code=303)


@router.get("/login")
def login_page(context: ContextDep, hw_lang: LanguageCookie = None) -> HTMLResponse:
    """Username and password."""
    return page(context, language_of(context, hw_lang), "login.html", "/login", page="login")


def thresholds(context: ContextDep) -> dict[str, float]:
    """The default thresholds, by the names a device's registry entry overrides them with."""
    if context.alerts is None:
        return {}
    s = context.alerts.engine.settings
    return {
        "smoke_db_m": s.smoke_db_m,
        "gas_lel_pct": s.gas_major_lel_pct,
        "gas_lel_pct_critical": s.gas_critical_lel_pct,
        "co_ppm": s.co_ppm,
        "battery_pct": s.battery_pct,
    }


@router.get("/board")
def board_page(context: ContextDep, hw_lang: LanguageCookie = None) -> HTMLResponse:
    """The duty desk's alarm board."""
    return page(
        context,
        language_of(context, hw_lang),
        "board.html",
        "/board",
        page="board",
        thresholds=thresholds(context),
    )


@router.get("/alerts/{alert_id}")
def alert_page(alert_id: str, context: ContextDep, hw_lang: LanguageCookie = None) -> HTMLResponse:
    """The board with one alarm picked out (the link in a notice)."""
    return page(
        context,
        language_of(context, hw_lang),
        "board.html",
        f"/alerts/{alert_id[:64]}",
        page="board",
        thresholds=thresholds(context),
        focus=alert_id[:64],
    )


@router.get("/tickets")
def tickets_page(context: ContextDep, hw_lang: LanguageCookie = None) -> HTMLResponse:
    """The ledger: the tickets the person may see, with filters."""
    return page(context, language_of(context, hw_lang), "tickets.html", "/tickets", page="tickets")


@router.get("/reports")
def reports_page(context: ContextDep, hw_lang: LanguageCookie = None) -> HTMLResponse:
    """The monthly ledger and dispatch table: preview and download."""
    return page(context, language_of(context, hw_lang), "reports.html", "/reports", page="reports")


@router.get("/admin/users")
def users_page(context: ContextDep, hw_lang: LanguageCookie = None) -> HTMLResponse:
    """People's accounts (the API lets only admins in)."""
    return page(context, language_of(context, hw_lang), "users.html", "/admin/users", page="users")


@router.get("/tickets/{ticket_id}")
def ticket_page(
    ticket_id: str, context: ContextDep, hw_lang: LanguageCookie = None
) -> HTMLResponse:
    """One ticket: its fields, trail, the steps the person may take, evidence upload."""
    return page(
        context,
        language_of(context, hw_lang),
        "ticket.html",
        f"/tickets/{ticket_id[:64]}",
        page="ticket",
        ticket=ticket_id[:64],
    )


@router.get("/institutions")
def institutions_page(context: ContextDep, hw_lang: LanguageCookie = None) -> HTMLResponse:
    """The institutions the person may see, with their devices' state and open alarms."""
    return page(
        context,
        language_of(context, hw_lang),
        "institutions.html",
        "/institutions",
        page="institutions",
    )


@router.get("/institutions/{institution_id}")
def institution_page(
    institution_id: str, context: ContextDep, hw_lang: LanguageCookie = None
) -> HTMLResponse:
    """One institution: its devices and their state, open alarms and tickets."""
    return page(
        context,
        language_of(context, hw_lang),
        "institution.html",
        page="institution",
        institution=institution_id[:64],
        back=f"/institutions/{institution_id[:64]}",
    )


@router.get("/devices/{device_id}")
def device_page(
    device_id: str, context: ContextDep, hw_lang: LanguageCookie = None
) -> HTMLResponse:
    """One device: its readings chart with the thresholds, and its alarm history."""
    return page(
        context,
        language_of(context, hw_lang),
        "device.html",
        page="device",
        device=device_id[:64],
        thresholds=thresholds(context),
        back=f"/devices/{device_id[:64]}",
    )


@router.get("/language")
def switch_language(
    request: Request,
    to: Annotated[Language, Query(description="zh-CN or en")],
    back: Annotated[str, Query(max_length=200)] = "/board",
) -> Response:
    """Remember the language chosen and go back to the page (of this site only)."""
    target = back if back.startswith("/") and not back.startswith("//") else "/board"
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(
        LANGUAGE_COOKIE,
        to,
        max_age=365 * 24 * 3600,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer

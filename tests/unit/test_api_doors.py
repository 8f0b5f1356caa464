"""The API's doors: /metrics behind a token, /readyz's detail, /docs from local files only,
docs and schema switched off, and the [api] settings that drive them."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from api.app import create_app
from api.deps import ApiContext
from core.errors import ConfigError
from core.health import Health
from core.settings import load_settings

ADMIN = "admin-token-0123456789abcdef"
METRICS = "metrics-token-0123456789abcdef"
SECRET_REASON = "connection to db.internal:5432 failed for user hazardwatch"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HAZARDWATCH_ variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("HAZARDWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def make_context(**fields: Any) -> ApiContext:
    """A context with what the health router needs; the stores are never reached here."""
    registry = CollectorRegistry()
    Counter("hazardwatch_messages_received", "test", registry=registry).inc(3)
    health = Health()
    health.component("forwarder").failing(SECRET_REASON)
    return ApiContext(
        admin_token=ADMIN,
        registry=cast(Any, None),
        dead_letters=cast(Any, None),
        presence=cast(Any, None),
        metrics=registry,
        health=health,
        **fields,
    )


async def get(app: FastAPI, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hazardwatch") as client:
        return await client.get(path, headers=headers)


# --- /metrics and /readyz -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", METRICS[:-1]])
async def test_metrics_refuse_a_caller_without_the_token(token: str | None) -> None:
    app = create_app(make_context(metrics_token=METRICS))
    response = await get(app, "/metrics", token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "hazardwatch_messages_received" not in response.text


@pytest.mark.parametrize("token", [METRICS, ADMIN])
async def test_metrics_answer_the_metrics_token_and_the_admin_token(token: str) -> None:
    app = create_app(make_context(metrics_token=METRICS))
    response = await get(app, "/metrics", token)
    assert response.status_code == 200
    assert "hazardwatch_messages_received_total 3.0" in response.text


async def test_without_a_metrics_token_only_the_admin_token_opens_metrics() -> None:
    app = create_app(make_context())
    assert (await get(app, "/metrics")).status_code == 401
    assert (await get(app, "/metrics", METRICS)).status_code == 401
    assert (await get(app, "/metrics", ADMIN)).status_code == 200


async def test_the_metrics_token_opens_nothing_under_api() -> None:
    app = create_app(make_context(metrics_token=METRICS))
    assert (await get(app, "/api/v1/dead-letters", METRICS)).status_code == 401


async def test_readyz_tells_anyone_the_state_and_only_the_token_why() -> None:
    app = create_app(make_context(metrics_token=METRICS))
    anonymous = await get(app, "/readyz")
    assert anonymous.status_code == 200
    assert anonymous.json() == {"ready": True, "status": "degraded", "checks": {}}
    assert SECRET_REASON not in anonymous.text
    for token in (METRICS, ADMIN):
        detailed = (await get(app, "/readyz", token)).json()
        assert detailed["components"]["forwarder"]["reason"] == SECRET_REASON


async def test_healthz_stays_open() -> None:
    app = create_app(make_context(metrics_token=METRICS), docs=False)
    assert (await get(app, "/healthz")).json() == {"status": "ok"}


# --- /docs and /openapi.json --------------------------------------------------------------------


class _Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def _same_origin(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and url.startswith("/")


async def test_docs_load_every_file_from_the_service_itself() -> None:
    app = create_app(make_context())
    page = await get(app, "/docs")
    assert page.status_code == 200
    links = _Links()
    links.feed(page.text)
    assert len(links.urls) >= 3, page.text  # the script, the style sheet, the icon
    assert [url for url in links.urls if not _same_origin(url)] == []
    # The page asks Swagger UI not to send the schema to validator.swagger.io.
    assert '"validatorUrl": null' in page.text
    assert re.search(r"""url:\s*['"]/openapi\.json['"]""", page.text)
    for url in links.urls:
        asset = await get(app, url)
        assert asset.status_code == 200, url
        assert asset.content, url
        if url.endswith(".css"):  # what a style sheet loads in turn: inline data only
            loaded = re.findall(r"""url\(\s*['"]?([^'")\s]+)""", asset.text)
            assert [u for u in loaded if not u.startswith("data:")] == [], url
    schema = await get(app, "/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/alerts" in schema.json()["paths"]


async def test_docs_switched_off_serve_neither_docs_nor_schema() -> None:
    app = create_app(make_context(), docs=False)
    for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"):
        assert (await get(app, path)).status_code == 404, path
        assert (await get(app, path, ADMIN)).status_code == 404, path
    on = create_app(make_context())
    links = _Links()
    links.feed((await get(on, "/docs")).text)
    for url in links.urls:  # the Swagger UI files are not served either
        assert (await get(app, url)).status_code == 404, url


# --- the [api] settings -------------------------------------------------------------------------


def test_api_defaults_serve_docs_over_plain_http_without_a_metrics_token() -> None:
    api = load_settings().api
    assert api.docs is True
    assert api.tls is False
    assert api.metrics_bearer() is None


def test_api_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAZARDWATCH_API__DOCS", "false")
    monkeypatch.setenv("HAZARDWATCH_API__METRICS_TOKEN", METRICS)
    settings = load_settings()
    assert settings.api.docs is False
    assert settings.api.metrics_bearer() == METRICS
    assert METRICS not in json.dumps(settings.redacted())


def test_metrics_token_is_read_from_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "metrics_token"
    path.write_text(METRICS + "\n", encoding="utf-8")
    monkeypatch.setenv("HAZARDWATCH_API__METRICS_TOKEN_FILE", str(path))
    settings = load_settings()
    assert settings.api.metrics_bearer() == METRICS
    assert METRICS not in json.dumps(settings.redacted())
    assert METRICS not in repr(settings)


def test_docs_switch_in_toml(tmp_path: Path) -> None:
    config = tmp_path / "hazardwatch.toml"
    config.write_text("[api]\ndocs = false\n", encoding="utf-8")
    assert load_settings(config).api.docs is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HAZARDWATCH_API__METRICS_TOKEN": "short"},
            "HAZARDWATCH_API__METRICS_TOKEN: Value error, must be at least 16 characters",
        ),
        (
            {"HAZARDWATCH_API__METRICS_TOKEN_FILE": "missing"},
            "HAZARDWATCH_API__METRICS_TOKEN_FILE: cannot read",
        ),
        (
            {"HAZARDWATCH_API__METRICS_TOKEN_FILE": "short", "__short": "abc"},
            "HAZARDWATCH_API__METRICS_TOKEN: Value error, must be at least 16 characters",
        ),
        (
            {
                "HAZARDWATCH_API__METRICS_TOKEN_FILE": "good",
                "HAZARDWATCH_API__METRICS_TOKEN": METRICS,
            },
            "HAZARDWATCH_API__METRICS_TOKEN and HAZARDWATCH_API__METRICS_TOKEN_FILE are both set",
        ),
        (
            {"HAZARDWATCH_API__TLS_CERTFILE": "cert.pem"},
            "HAZARDWATCH_API: Value error, tls_certfile and tls_keyfile go together",
        ),
        (
            {
                "HAZARDWATCH_API__TLS_CERTFILE": "cert.pem",
                "HAZARDWATCH_API__TLS_KEYFILE": "key.pem",
            },
            "HAZARDWATCH_API: Value error, cannot use tls_certfile and tls_keyfile:",
        ),
        (
            {"HAZARDWATCH_API__DOCS": "maybe"},
            "HAZARDWATCH_API__DOCS: Input should be a valid boolean",
        ),
    ],
)
def test_bad_api_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "short").write_text(env.pop("__short", ""), encoding="utf-8")
    (tmp_path / "good").write_text(METRICS, encoding="utf-8")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)

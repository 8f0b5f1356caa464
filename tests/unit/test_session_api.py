"""Sessions through the real app (api.app.create_app over SQLite): the cookie, CSRF, logout,
lock-out answers, password change, the audit log's route, the bootstrap token's revocation."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pwdlib.hashers.argon2 import Argon2Hasher

from api.app import create_app
from api.deps import CSRF_HEADER, SESSION_ENDED, ApiContext
from core.accounts import Accounts
from core.clock import FakeClock
from core.db import make_engine, session_factory, upgrade
from core.eventlog import JournalEventLog
from core.passwords import Passwords
from core.registry.repository import RegistryRepository
from core.settings import AuthSettings
from core.users import Role, User
from ingest.deadletters import DeadLetterStore
from ingest.presence import Presence
from tests.unit.test_api_limits import call, pieces
from tests.unit.test_ledger import INSTITUTION
from tickets.models import TicketSource
from tickets.policy import load_policy
from tickets.stage import TicketStage

ADMIN_TOKEN = "admin-token-for-the-session-tests"
PASSWORD = "the duty desk's passphrase"
ZHAO = User(name="zhao", display_name="赵", role=Role.DUTY_OFFICER)
BOSS = User(name="boss", display_name="局长", role=Role.BUREAU)
WU = User(name="wu", display_name="吴", role=Role.INSTITUTION, institutions=("inst-1",))


@dataclass
class Site:
    app: FastAPI
    context: ApiContext
    accounts: Accounts
    clock: FakeClock
    ticket: str
    tokens: dict[str, str]
    revoked: list[bool]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("migrated") / "hazardwatch.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


def make_site(tmp_path: Path, migrated: Path, **auth: object) -> tuple[Site, list[object]]:
    database = tmp_path / "hazardwatch.sqlite"
    shutil.copyfile(migrated, database)
    engine = make_engine(f"sqlite:///{database}")
    clock = FakeClock(datetime.now(UTC))
    settings = AuthSettings.model_validate({"lockout_user_failures": 3, **auth})
    cheap = Passwords(Argon2Hasher(time_cost=1, memory_cost=64, parallelism=1))
    accounts = Accounts(engine, settings, clock=clock, passwords=cheap)
    accounts.add_user(ZHAO, password=PASSWORD, with_token=False, actor="cli:root")
    tokens = {
        "boss": accounts.add_user(BOSS, password=None, with_token=True, actor="cli:root"),
        "wu": accounts.add_user(WU, password=PASSWORD, with_token=True, actor="cli:root"),
    }
    events = JournalEventLog(tmp_path / "events", fsync=False)
    stage = TicketStage(load_policy(), engine, {"inst-1": INSTITUTION}.get, events, clock=clock)
    ticket = stage.ledger.create(
        actor="admin",
        source=TicketSource.SELF_INSPECTION,
        institution="inst-1",
        category="evacuation_blocked",
        title="走廊堵塞",
        due_at=clock.now() + timedelta(days=30),
    )
    dead_letters = DeadLetterStore(tmp_path / "deadletters.sqlite")
    revoked = [False]
    context = ApiContext(
        admin_token=ADMIN_TOKEN,
        registry=RegistryRepository(session_factory(engine)),
        dead_letters=dead_letters,
        presence=Presence(),
        metrics=CollectorRegistry(),
        users=accounts.users,
        tickets=stage,
        events=events,
        accounts=accounts,
        bootstrap_revoked=lambda: revoked[0],
    )
    site = Site(
        create_app(context),
        context,
        accounts,
        clock,
        ticket.id,
        {k: v for k, v in tokens.items() if v is not None},
        revoked,
    )
    return site, [dead_letters, events, engine]


@pytest.fixture
def site(tmp_path: Path, migrated: Path) -> Iterator[Site]:
    made, closing = make_site(tmp_path, migrated)
    yield made
    for item in closing:
        (getattr(item, "close", None) or item.dispose)()  # type: ignore[attr-defined]


@pytest.fixture
async def client(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=site.app, client=("10.1.2.3", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hazardwatch") as client:
        yield client


async def log_in(client: httpx.AsyncClient, name: str = "zhao") -> str:
    """Logs in (the client keeps the cookie); the CSRF token."""
    answer = await client.post("/api/v1/session", json={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["csrf_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- the cookie -----------------------------------------------------------------------------


async def test_a_login_sets_an_httponly_samesite_strict_cookie(
    site: Site, client: httpx.AsyncClient
) -> None:
    answer = await client.post("/api/v1/session", json={"username": "zhao", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert cookie.startswith("hw_session=")
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "secure" not in attributes, "plain http: a Secure cookie would never come back"
    assert "samesite=strict" in cookie.lower() and "path=/;" in cookie.lower() + ";"
    assert "max-age=43200" in cookie.lower()
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["user"]["name"] == "zhao" and body["auth"] == "session"
    assert body["idle_timeout_s"] == 1800 and body["visible_institutions"] is None
    session_id = client.cookies["hw_session"]
    assert session_id not in answer.text, "the id is only in the cookie"
    me = await client.get("/api/v1/session")
    assert me.status_code == 200 and me.json()["csrf_token"] == body["csrf_token"]


@pytest.mark.parametrize(
    ("base", "setting", "secure"),
    [
        ("https://hazardwatch", "auto", True),
        ("http://hazardwatch", "always", True),
        ("https://hazardwatch", "never", False),
    ],
)
async def test_the_cookie_is_secure_over_https_or_as_set(
    tmp_path: Path, migrated: Path, base: str, setting: str, secure: bool
) -> None:
    made, closing = make_site(tmp_path, migrated, cookie_secure=setting)
    transport = httpx.ASGITransport(app=made.app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        answer = await client.post(
            "/api/v1/session", json={"username": "zhao", "password": PASSWORD}
        )
    cookie = answer.headers["set-cookie"]
    assert ("secure" in cookie.lower().replace("samesite", "")) == secure
    assert cookie.startswith("__Host-hw_session=" if secure else "hw_session=")
    name, value = cookie.split(";")[0].split("=", 1)
    # The __Host- cookie is read like the plain one.
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        me = await client.get("/api/v1/session", headers={"cookie": f"{name}={value}"})
    assert me.status_code == 200
    for item in closing:
        (getattr(item, "close", None) or item.dispose)()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("base", "setting"), [("https://hazardwatch", "auto"), ("http://hazardwatch", "always")]
)
async def test_under_https_only_the_host_cookie_opens_a_session(
    tmp_path: Path, migrated: Path, base: str, setting: str
) -> None:
    # A `hw_session` cookie planted by a sibling subdomain or on the plain-HTTP network would
    # log the browser into the planter's account: under HTTPS only `__Host-` counts.
    made, closing = make_site(tmp_path, migrated, cookie_secure=setting)
    transport = httpx.ASGITransport(app=made.app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        answer = await client.post(
            "/api/v1/session", json={"username": "zhao", "password": PASSWORD}
        )
        value = answer.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        planted = await client.get("/api/v1/session", headers={"cookie": f"hw_session={value}"})
        hosted = await client.get(
            "/api/v1/session", headers={"cookie": f"__Host-hw_session={value}"}
        )
        # Also a change: BodyGate reads the cookie before the route does.
        posted = await client.post(
            "/api/v1/session/password",
            headers={"cookie": f"hw_session={value}"},
            json={"old": PASSWORD, "new": "another long passphrase"},
        )
    assert planted.status_code == 401 and hosted.status_code == 200
    assert posted.status_code == 401
    for item in closing:
        (getattr(item, "close", None) or item.dispose)()  # type: ignore[attr-defined]


async def test_a_login_is_json_only(client: httpx.AsyncClient) -> None:
    # A form on another site can post text/plain or a form, never application/json.
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        answer = await client.post(
            "/api/v1/session",
            content=f'{{"username": "zhao", "password": "{PASSWORD}"}}',
            headers={"content-type": content_type},
        )
        assert answer.status_code == 422 and "set-cookie" not in answer.headers


# --- CSRF --------------------------------------------------------------------------------------


async def test_a_change_with_the_cookie_needs_the_csrf_token(
    site: Site, client: httpx.AsyncClient
) -> None:
    csrf = await log_in(client)
    path = f"/api/v1/tickets/{site.ticket}/comment"
    assert (await client.get(f"/api/v1/tickets/{site.ticket}")).status_code == 200
    missing = await client.post(path, json={"note": "到场"})
    assert missing.status_code == 403 and "X-CSRF-Token header is missing" in missing.text
    wrong = await client.post(path, json={"note": "到场"}, headers={CSRF_HEADER: "0" * 64})
    assert wrong.status_code == 403 and "does not match this session" in wrong.text
    done = await client.post(path, json={"note": "到场"}, headers={CSRF_HEADER: csrf})
    assert done.status_code == 200, done.text
    # Refused before a byte of the body is read, as a stranger is.
    cookie = f"hw_session={client.cookies['hw_session']}"
    answer = await call(
        site.app,
        "POST",
        path,
        {"cookie": cookie, "content-type": "application/json"},
        pieces(b"{" * 3_000_000),
    )
    assert answer.status == 403 and answer.chunks_read == 0
    # Another session's token does not do.
    other = httpx.AsyncClient(transport=client._transport, base_url="http://hazardwatch")
    async with other:
        other_csrf = await log_in(other)
        crossed = await client.post(path, json={"note": "x"}, headers={CSRF_HEADER: other_csrf})
        assert crossed.status_code == 403


async def test_a_bearer_token_needs_no_csrf_token(site: Site, client: httpx.AsyncClient) -> None:
    path = f"/api/v1/tickets/{site.ticket}/comment"
    done = await client.post(path, json={"note": "到场"}, headers=bearer(site.tokens["wu"]))
    assert done.status_code == 200, done.text
    me = await client.get("/api/v1/session", headers=bearer(site.tokens["wu"]))
    assert me.json()["auth"] == "token" and me.json()["csrf_token"] is None
    assert me.json()["visible_institutions"] == ["inst-1"]


# --- logout, timeouts, revocation -----------------------------------------------------------------


async def test_logout_ends_the_session_and_clears_the_cookie(
    site: Site, client: httpx.AsyncClient
) -> None:
    csrf = await log_in(client)
    session_id = client.cookies["hw_session"]
    assert (await client.delete("/api/v1/session")).status_code == 403, "a change: CSRF first"
    out = await client.delete("/api/v1/session", headers={CSRF_HEADER: csrf})
    assert out.status_code == 204
    assert (
        'hw_session=""' in out.headers["set-cookie"]
        or "max-age=0" in out.headers["set-cookie"].lower()
    )
    again = await client.get("/api/v1/alerts", headers={"cookie": f"hw_session={session_id}"})
    assert again.status_code == 401 and again.json()["detail"] == SESSION_ENDED


async def test_an_idle_session_is_refused(site: Site, client: httpx.AsyncClient) -> None:
    await log_in(client)
    site.clock.advance(29 * 60)
    assert (await client.get("/api/v1/session")).status_code == 200
    site.clock.advance(30 * 60)
    assert (await client.get("/api/v1/session")).status_code == 401


async def test_a_revoked_user_s_session_is_refused_at_once(
    site: Site, client: httpx.AsyncClient
) -> None:
    await log_in(client)
    site.accounts.revoke("zhao", actor="cli:root")
    assert (await client.get("/api/v1/session")).status_code == 401


# --- logins refused -----------------------------------------------------------------------------


async def test_wrong_passwords_lock_out_even_the_right_one(
    site: Site, client: httpx.AsyncClient
) -> None:
    answers = []
    for name in ("zhao", "nobody"):
        for _ in range(3):
            answer = await client.post(
                "/api/v1/session", json={"username": name, "password": "a wrong guess!"}
            )
            answers.append((answer.status_code, answer.json()))
        locked = await client.post("/api/v1/session", json={"username": name, "password": PASSWORD})
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == "60"
        assert locked.json() == {"detail": "too many failed logins: try again in 60 s"}
    assert answers == [(401, {"detail": "wrong user name or password"})] * 6
    site.clock.advance(60)
    assert (
        await client.post("/api/v1/session", json={"username": "zhao", "password": PASSWORD})
    ).status_code == 200


# --- passwords ------------------------------------------------------------------------------


async def test_a_password_is_changed_in_a_session_and_ends_the_others(
    site: Site, client: httpx.AsyncClient
) -> None:
    new = {"old": PASSWORD, "new": "a brand new passphrase"}
    token_change = await client.post(
        "/api/v1/session/password", json=new, headers=bearer(site.tokens["wu"])
    )
    assert token_change.status_code == 403 and "a token cannot change it" in token_change.text
    other = httpx.AsyncClient(transport=client._transport, base_url="http://hazardwatch")
    async with other:
        await log_in(other)
        csrf = await log_in(client)
        short = await client.post(
            "/api/v1/session/password",
            json={"old": PASSWORD, "new": "short"},
            headers={CSRF_HEADER: csrf},
        )
        assert short.status_code == 422 and "at least 12" in short.text
        wrong = await client.post(
            "/api/v1/session/password",
            json={"old": "not my password", "new": "a brand new passphrase"},
            headers={CSRF_HEADER: csrf},
        )
        assert wrong.status_code == 403 and "current password is wrong" in wrong.text
        done = await client.post("/api/v1/session/password", json=new, headers={CSRF_HEADER: csrf})
        assert done.status_code == 204, done.text
        assert (await client.get("/api/v1/session")).status_code == 200, "this one goes on"
        assert (await other.get("/api/v1/session")).status_code == 401, "the others end"


# --- the audit log ------------------------------------------------------------------------------


async def test_the_audit_log_is_for_the_bureau_and_admins(
    site: Site, client: httpx.AsyncClient
) -> None:
    csrf = await log_in(client)
    path = f"/api/v1/tickets/{site.ticket}/comment"
    await client.post(path, json={"note": "到场"}, headers={CSRF_HEADER: csrf})
    for token, expected in (
        (site.tokens["boss"], 200),
        (ADMIN_TOKEN, 200),
        (site.tokens["wu"], 403),
    ):
        answer = await client.get("/api/v1/audit", headers=bearer(token))
        assert answer.status_code == expected, answer.text
    assert (await client.get("/api/v1/audit")).status_code == 403, "zhao: the duty desk"
    found = await client.get(
        "/api/v1/audit", params={"actor": "zhao"}, headers=bearer(site.tokens["boss"])
    )
    entries = found.json()
    assert found.headers["x-total-count"] == str(len(entries)) == "2"
    comment, login = entries
    assert (login["action"], login["address"]) == ("login", "10.1.2.3")
    assert (comment["action"], comment["object"]) == ("ticket_commented", f"ticket:{site.ticket}")
    assert comment["detail"]["note"] == "到场" and comment["detail"]["institution"] == "inst-1"
    assert comment["detail"]["status"] == {"from": "open", "to": "open"}
    since = await client.get(
        "/api/v1/audit",
        params={"action": "login", "from": site.clock.now().isoformat()},
        headers=bearer(site.tokens["boss"]),
    )
    assert [e["actor"] for e in since.json()] == ["zhao"]


# --- the bootstrap token ------------------------------------------------------------------------


async def test_a_revoked_bootstrap_token_is_refused(site: Site, client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/session", headers=bearer(ADMIN_TOKEN))).status_code == 200
    site.revoked[0] = True
    assert (await client.get("/api/v1/session", headers=bearer(ADMIN_TOKEN))).status_code == 401

"""The caller is known before the body is read, and bodies stay within their route's limit.

The app is the real one (api.app.create_app) over SQLite, a ledger with one ticket and an
attachment store. `call` drives it at the ASGI level and counts the body chunks it read.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from api.app import create_app
from api.deps import ApiContext
from api.limits import DEFAULT_LIMITS, MULTIPART_OVERHEAD, BodyLimits
from core.clock import FakeClock
from core.db import make_engine, session_factory, upgrade
from core.eventlog import ALERT, JournalEventLog, NewEvent
from core.registry.repository import RegistryRepository
from core.settings import ApiSettings, TicketSettings
from core.users import Role, User, UserStore
from ingest.deadletters import DeadLetterStore
from ingest.presence import Presence
from tests.unit.test_ledger import INSTITUTION
from tickets.attachments import AttachmentStore
from tickets.models import TicketSource
from tickets.policy import load_policy
from tickets.stage import TicketStage

ADMIN_TOKEN = "admin-token-for-the-limit-tests"
FILE_MAX = 100_000  # the largest evidence file, in these tests
LIMITS = BodyLimits(body_bytes=DEFAULT_LIMITS.body_bytes, attachment_bytes=FILE_MAX)
CHUNK = 1 << 16
THREE_MB = 3_000_000
UNAUTHORIZED = {"detail": "a valid bearer token is required"}


@dataclass
class Site:
    app: FastAPI
    context: ApiContext
    engine: Engine
    events: JournalEventLog
    ticket: str
    user_token: str
    data_dir: Path

    def bearer(self, token: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {token or ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database at the head revision, to copy (migrating takes a second)."""
    path = tmp_path_factory.mktemp("migrated") / "hazardwatch.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def site(tmp_path: Path, migrated: Path) -> Iterator[Site]:
    database = tmp_path / "hazardwatch.sqlite"
    shutil.copyfile(migrated, database)
    engine = make_engine(f"sqlite:///{database}")
    users = UserStore(engine)
    wang = User(name="wang", display_name="王工", role=Role.CONTRACTOR, institutions=("inst-1",))
    events = JournalEventLog(tmp_path / "events", fsync=False)
    attachments = AttachmentStore(tmp_path, FILE_MAX)
    stage = TicketStage(
        load_policy(),
        engine,
        {"inst-1": INSTITUTION}.get,
        events,
        clock=FakeClock(),
        attachments=attachments,
    )
    ticket = stage.ledger.create(
        actor="admin",
        source=TicketSource.SELF_INSPECTION,
        institution="inst-1",
        category="evacuation_blocked",
        title="走廊堵塞",
        due_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    dead_letters = DeadLetterStore(tmp_path / "deadletters.sqlite")
    context = ApiContext(
        admin_token=ADMIN_TOKEN,
        registry=RegistryRepository(session_factory(engine)),
        dead_letters=dead_letters,
        presence=Presence(),
        metrics=CollectorRegistry(),
        users=users,
        tickets=stage,
        events=events,
    )
    yield Site(
        create_app(context, LIMITS), context, engine, events, ticket.id, users.add(wang), tmp_path
    )
    dead_letters.close()
    events.close()
    engine.dispose()


@pytest.fixture
async def client(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=site.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hazardwatch") as client:
        yield client


@dataclass
class Answer:
    """What the app sent, and how many body chunks it had read by then."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks_read: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: FastAPI,
    method: str,
    path: str,
    headers: dict[str, str],
    chunks: Iterable[bytes] = (),
) -> Answer:
    """One request, its body sent chunk by chunk as the app asks for it (as a server does)."""
    pending = list(chunks) or [b""]
    answer = Answer()

    async def receive() -> dict[str, Any]:
        if answer.chunks_read < len(pending):
            answer.chunks_read += 1
            more = answer.chunks_read < len(pending)
            return {
                "type": "http.request",
                "body": pending[answer.chunks_read - 1],
                "more_body": more,
            }
        await asyncio.Event().wait()  # the whole body is sent; the client is still there
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert answer.status == 0, "one answer to a request"
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    await app(http_scope(method, path, headers), receive, send)  # type: ignore[arg-type]
    return answer


def http_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("hazardwatch", 80),
    }


def pieces(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def multipart(data: bytes, boundary: str = "hazardwatch-boundary") -> tuple[str, bytes]:
    """A multipart form with one file part: its content type and body."""
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return (
        f"multipart/form-data; boundary={boundary}",
        head + data + f"\r\n--{boundary}--\r\n".encode(),
    )


def stored_files(site: Site) -> list[Path]:
    root = site.data_dir / "attachments"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- the caller before the body -----------------------------------------------------------------


async def test_a_big_malformed_body_without_a_token_is_refused_401_unread(
    site: Site, client: httpx.AsyncClient
) -> None:
    malformed = b"{" * THREE_MB
    json_type = {"content-type": "application/json"}
    got = await client.post("/api/v1/tickets", content=malformed, headers=json_type)
    assert got.status_code == 401, got.text[:200]  # was 422: the body was parsed first
    assert got.json() == UNAUTHORIZED
    assert got.headers["www-authenticate"] == "Bearer"
    # The same answer as require_token gives where no body is involved.
    plain = await client.get("/api/v1/tickets")
    assert (plain.status_code, plain.json()) == (401, UNAUTHORIZED)
    assert plain.headers["www-authenticate"] == "Bearer"

    for declared in ({"content-length": str(THREE_MB)}, {"transfer-encoding": "chunked"}):
        answer = await call(
            site.app, "POST", "/api/v1/tickets", json_type | declared, pieces(malformed)
        )
        assert (answer.status, answer.json()) == (401, UNAUTHORIZED)
        assert answer.chunks_read == 0, "not a byte of the body was read"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-token-of-anyone", f"Basic {ADMIN_TOKEN}", "Bearer", ADMIN_TOKEN, ""],
)
async def test_a_bad_token_is_refused_401_unread(site: Site, authorization: str) -> None:
    answer = await call(
        site.app,
        "POST",
        f"/api/v1/tickets/{site.ticket}/comment",
        {"authorization": authorization, "content-type": "application/json"},
        pieces(b"x" * THREE_MB),
    )
    assert (answer.status, answer.json()) == (401, UNAUTHORIZED)
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.chunks_read == 0


async def test_a_users_token_is_checked_in_the_database_and_its_absence_is_503(
    site: Site, client: httpx.AsyncClient
) -> None:
    path = f"/api/v1/tickets/{site.ticket}/comment"
    ok = await client.post(path, json={"note": "到场"}, headers=site.bearer(site.user_token))
    assert ok.status_code == 200, ok.text
    assert site.context.users is not None
    site.context.users = UserStore(site.engine, away=lambda: True)  # nothing cached, db away
    answer = await call(
        site.app,
        "POST",
        path,
        site.bearer(site.user_token) | {"content-type": "application/json"},
        pieces(b"{" * THREE_MB),
    )
    assert answer.status == 503 and "database is not answering" in answer.json()["detail"]
    assert answer.headers["retry-after"] == "10"
    assert answer.chunks_read == 0
    admin = await client.post(path, json={"note": "值班"}, headers=site.bearer())
    assert admin.status_code == 200, "the bootstrap admin needs no database to be known"


# --- sizes --------------------------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_refused_413_unread(site: Site) -> None:
    answer = await call(
        site.app,
        "POST",
        "/api/v1/tickets",
        site.bearer() | {"content-type": "application/json", "content-length": str(THREE_MB)},
        pieces(b" " * THREE_MB),
    )
    assert answer.status == 413
    assert answer.json() == {
        "detail": "the request body is larger than 65,536 bytes, the most it may be"
    }
    assert answer.chunks_read == 0


async def test_a_chunked_body_is_cut_off_with_413_as_soon_as_it_passes_the_limit(
    site: Site,
) -> None:
    body = b'{"note": "' + b"x" * THREE_MB + b'"}'
    answer = await call(
        site.app,
        "POST",
        f"/api/v1/tickets/{site.ticket}/comment",
        site.bearer() | {"content-type": "application/json", "transfer-encoding": "chunked"},
        pieces(body, 4096),
    )
    assert answer.status == 413, answer.body
    assert "larger than 65,536 bytes" in answer.json()["detail"]
    assert answer.chunks_read == 65536 // 4096 + 1, "not one chunk more than needed to know"


async def test_a_body_within_the_limit_is_served_chunked_or_not(
    site: Site, client: httpx.AsyncClient
) -> None:
    path = f"/api/v1/tickets/{site.ticket}/comment"
    ok = await client.post(path, json={"note": "正常"}, headers=site.bearer())
    assert ok.status_code == 200 and ok.json()["id"] == site.ticket
    body = json.dumps({"note": "分块"}).encode()
    answer = await call(
        site.app,
        "POST",
        path,
        site.bearer() | {"content-type": "application/json", "transfer-encoding": "chunked"},
        pieces(body, 5),
    )
    assert answer.status == 200, answer.body
    malformed = await client.post(
        path, content=b"{", headers=site.bearer() | {"content-type": "application/json"}
    )
    assert malformed.status_code == 422, "a known caller's bad JSON: 422 as before"


async def test_the_largest_ticket_a_person_writes_fits_the_default_limit(
    client: httpx.AsyncClient,
) -> None:
    text = "消防通道堵塞" * 1000  # 3 bytes a character in UTF-8
    links = [
        {"name": f"现场照片{n}", "url": f"https://files.example.org/{'p' * 180}/{n}.jpg"}
        for n in range(20)
    ]
    ticket = {
        "source": "self_inspection",
        "institution": "inst-1",
        "category": "evacuation_blocked",
        "title": text[:200],
        "description": text[:5000],
        "measures": text[:5000],
        "note": text[:5000],
        "responsible_unit": text[:200],
        "responsible_person": text[:100],
        "due_at": "2026-12-01T00:00:00Z",
        "evidence": links,
    }
    body = json.dumps(ticket, ensure_ascii=False).encode()
    assert 50 << 10 < len(body) < DEFAULT_LIMITS.body_bytes  # docs/configuration.md: 51 KiB
    created = await client.post(
        "/api/v1/tickets",
        content=body,
        headers={"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"},
    )
    assert created.status_code == 201, created.text[:300]


async def test_a_content_length_that_is_no_number_is_refused_400(site: Site) -> None:
    for bad in ("-1", "12a", "1e3", "²"):
        answer = await call(
            site.app,
            "POST",
            f"/api/v1/tickets/{site.ticket}/comment",
            site.bearer() | {"content-type": "application/json", "content-length": bad},
            [b"{}"],
        )
        assert answer.status == 400 and "Content-Length" in answer.json()["detail"], bad
        assert answer.chunks_read == 0


# --- uploads ------------------------------------------------------------------------------------


async def test_an_upload_up_to_the_file_limit_passes_and_one_over_it_is_413(
    site: Site, client: httpx.AsyncClient
) -> None:
    path = f"/api/v1/tickets/{site.ticket}/attachments"
    fits = await client.post(
        path,
        headers=site.bearer(site.user_token),
        files={"file": ("photo.jpg", b"j" * FILE_MAX, "image/jpeg")},
        data={"note": "整改后" * 1600},  # a long note fits the multipart allowance
    )
    assert fits.status_code == 201, fits.text
    assert fits.json()["size"] == FILE_MAX
    # Over the file limit by a little: within the request's allowance, so the store refuses it.
    over = await client.post(
        path, headers=site.bearer(), files={"file": ("a.bin", b"a" * (FILE_MAX + 1))}
    )
    assert over.status_code == 413
    assert over.json() == {"detail": f"the file is larger than {FILE_MAX:,} bytes"}
    # Over the request's allowance: refused from its Content-Length, unread.
    content_type, body = multipart(b"b" * (FILE_MAX + MULTIPART_OVERHEAD))
    answer = await call(
        site.app,
        "POST",
        path,
        site.bearer() | {"content-type": content_type, "content-length": str(len(body))},
        pieces(body),
    )
    cap = FILE_MAX + MULTIPART_OVERHEAD
    assert answer.status == 413 and answer.chunks_read == 0
    assert answer.json() == {
        "detail": f"the upload is larger than {cap:,} bytes: an evidence file may be "
        f"{FILE_MAX:,} bytes at most"
    }
    assert len(stored_files(site)) == 1, "only the file that fitted"


async def test_a_huge_chunked_upload_is_cut_off_at_the_cap(site: Site) -> None:
    content_type, body = multipart(b"h" * (20 * 2**20))  # 20 MiB, five times the chunks read
    answer = await call(
        site.app,
        "POST",
        f"/api/v1/tickets/{site.ticket}/attachments",
        site.bearer() | {"content-type": content_type, "transfer-encoding": "chunked"},
        pieces(body),
    )
    assert answer.status == 413, answer.body
    assert answer.json()["detail"].startswith("the upload is larger than")
    assert answer.chunks_read == (FILE_MAX + MULTIPART_OVERHEAD) // CHUNK + 1
    assert stored_files(site) == []


async def test_an_upload_without_a_token_is_refused_unread(site: Site) -> None:
    content_type, body = multipart(b"u" * THREE_MB)
    answer = await call(
        site.app,
        "POST",
        f"/api/v1/tickets/{site.ticket}/attachments",
        {"content-type": content_type, "content-length": str(len(body))},
        pieces(body),
    )
    assert (answer.status, answer.chunks_read) == (401, 0)


# --- what carries no body -----------------------------------------------------------------------


async def test_the_live_stream_is_not_buffered(site: Site) -> None:
    first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body") and not first.done():
            first.set_result(message["body"])

    scope = http_scope("GET", "/api/v1/stream", site.bearer())
    serving = asyncio.create_task(site.app(scope, receive, send))  # type: ignore[arg-type]
    opening = await asyncio.wait_for(first, 5)
    assert b"hazardwatch stream" in opening and not serving.done(), "sent while it runs"
    site.context.closing.set()  # the stream ends at its next look
    site.events.append([NewEvent(ALERT, "smoke-1", "inst-1", b"{}")])
    await asyncio.wait_for(serving, 5)


def test_the_limits_come_from_the_settings() -> None:
    default = DEFAULT_LIMITS
    assert (default.body_bytes, default.attachment_bytes) == (64 << 10, 20 << 20)
    limits = BodyLimits.of(ApiSettings(max_body_kib=8), TicketSettings(attachment_max_mb=0.5))
    assert limits == BodyLimits(8192, 524_288)

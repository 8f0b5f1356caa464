"""Authenticate first, size limits, over a real socket: `hazardwatch run` (uvicorn) against the
session's Mosquitto, with the embedded time-series store."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.service_process import TOKEN, ServiceProcess
from tests.integration.sites import REGISTRY
from tests.servers import Mosquitto

FILE_MAX = 50 * 1024  # [tickets] attachment_max_mb below
THREE_MB = 3_000_000
UNAUTHORIZED = {"detail": "a valid bearer token is required"}


@pytest.fixture
def service(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        tmp_path,
        {
            "HAZARDWATCH_MQTT_URL": mosquitto.url,
            "HAZARDWATCH_TICKETS__ATTACHMENT_MAX_MB": str(FILE_MAX / 2**20),
            "HAZARDWATCH_API__MAX_BODY_KIB": "16",
        },
    )
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY, encoding="utf-8")
    service.hazardwatch("registry", "import", str(registry))
    yield service.start()
    service.close()


def head_only(service: ServiceProcess, head: str) -> bytes:
    """Send a request's head and no body; what the service answers (it must not wait)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = connection.recv(65536)
            assert piece, f"closed after {answer!r}"
            answer += piece
        return answer


def test_strangers_and_big_bodies_are_refused_before_the_body_is_sent(
    service: ServiceProcess,
) -> None:
    no_token = head_only(
        service,
        "POST /api/v1/tickets HTTP/1.1\nHost: hazardwatch\nContent-Type: application/json\n"
        f"Content-Length: {THREE_MB}\nExpect: 100-continue",
    )
    assert no_token.startswith(b"HTTP/1.1 401 "), no_token
    assert b"100 Continue" not in no_token
    too_big = head_only(
        service,
        "POST /api/v1/tickets HTTP/1.1\nHost: hazardwatch\nContent-Type: application/json\n"
        f"Authorization: Bearer {TOKEN}\nContent-Length: {THREE_MB}\nExpect: 100-continue",
    )
    assert too_big.startswith(b"HTTP/1.1 413 "), too_big


def test_limits_over_http(service: ServiceProcess) -> None:
    url = f"{service.base}/api/v1/tickets"
    json_type = {"Content-Type": "application/json"}
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=30) as client:
        stranger = client.post(url, content=b"{" * THREE_MB, headers=json_type)
        assert (stranger.status_code, stranger.json()) == (401, UNAUTHORIZED)
        assert stranger.headers["www-authenticate"] == "Bearer"
        big = client.post(url, content=b"{" * THREE_MB, headers=json_type | admin)
        assert big.status_code == 413
        assert big.json() == {
            "detail": "the request body is larger than 16,384 bytes, the most it may be"
        }
        chunked = client.post(
            url, content=(b"x" * 65536 for _ in range(48)), headers=json_type | admin
        )
        assert chunked.status_code == 413 and "16,384 bytes" in chunked.json()["detail"]

        ticket = client.post(
            url,
            headers=admin,
            json={
                "source": "self_inspection",
                "institution": "inst-1",
                "category": "evacuation_blocked",
                "title": "走廊堵塞",
                "due_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            },
        )
        assert ticket.status_code == 201, ticket.text
        uploads = f"{url}/{ticket.json()['id']}/attachments"
        fits = client.post(uploads, headers=admin, files={"file": ("a.jpg", b"a" * FILE_MAX)})
        assert fits.status_code == 201, fits.text
        over = client.post(uploads, headers=admin, files={"file": ("b.jpg", b"b" * THREE_MB)})
        assert over.status_code == 413 and "the upload is larger" in over.json()["detail"]
        streamed = client.post(
            uploads,
            headers=admin | {"Content-Type": "multipart/form-data; boundary=x"},
            content=(b"--x\r\n" if n == 0 else b"c" * 65536 for n in range(48)),
        )
        assert streamed.status_code == 413 and "the upload is larger" in streamed.text
        # The service goes on serving, on the same connection and others.
        assert client.get(f"{url}/{ticket.json()['id']}", headers=admin).status_code == 200
    assert httpx.get(f"{service.base}/readyz", timeout=5).status_code == 200

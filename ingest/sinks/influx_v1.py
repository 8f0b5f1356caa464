"""InfluxDB 1.x over its HTTP `/write` API."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx

from core.errors import StoreError
from core.points import Point
from ingest.sinks.lineprotocol import encode_many

log = logging.getLogger(__name__)
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def classify(status: int, text: str) -> StoreError:
    """An HTTP failure as a StoreError; 4xx other than 408/429 will fail the same way again."""
    retryable = status >= 500 or status in (408, 429)
    return StoreError(f"HTTP {status}: {text[:300]}", retryable=retryable)


class InfluxV1Sink:
    """Writes line protocol to `/write?db=…&precision=ms`; `user:password` as the token."""

    name = "influxdb-v1"

    def __init__(self, url: str, database: str, token: str | None = None) -> None:
        auth = tuple(token.split(":", 1)) if token else None
        self._client = httpx.Client(base_url=url, timeout=TIMEOUT, auth=auth)  # type: ignore[arg-type]
        self._database = database
        self._ensured = False

    def _ensure_database(self) -> None:
        # CREATE DATABASE is idempotent in 1.x; without admin rights the DB must exist already.
        response = self._client.post("/query", data={"q": f'CREATE DATABASE "{self._database}"'})
        if response.status_code >= 400:
            log.warning("cannot create database %s: %s", self._database, response.text[:200])
        self._ensured = True

    def write(self, points: Sequence[Point]) -> None:
        """POST one batch."""
        if not points:
            return
        try:
            if not self._ensured:
                self._ensure_database()
            response = self._client.post(
                "/write",
                params={"db": self._database, "precision": "ms"},
                content=encode_many(points),
            )
        except httpx.HTTPError as exc:
            raise StoreError(f"InfluxDB unreachable: {exc!r}", retryable=True) from None
        if response.status_code != 204:
            raise classify(response.status_code, response.text)

    def ping(self) -> bool:
        """GET /ping answers 204 when InfluxDB is up."""
        try:
            return self._client.get("/ping", timeout=2.0).status_code == 204
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

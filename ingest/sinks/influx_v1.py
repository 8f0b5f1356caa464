"""InfluxDB 1.x over its HTTP `/write` API."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

from core.errors import StoreError
from core.points import Point
from core.readings import ReadingsQuery, Series, epoch_ms, from_epoch_ms
from ingest.sinks.lineprotocol import encode_many

log = logging.getLogger(__name__)
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# A person waits for a chart: a store that takes longer is as good as away.
READ_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


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


def string_literal(text: str) -> str:
    """An InfluxQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def readings_influxql(query: ReadingsQuery) -> str:
    """The InfluxQL of a readings query: means per bucket (epoch-aligned, as GROUP BY time
    makes them), empty buckets left out (fill(none))."""
    means = ", ".join(f'mean("{name}") AS "{name}"' for name in query.fields)
    return (
        f'SELECT {means} FROM "reading" WHERE "device" = {string_literal(query.device)}'
        f" AND time >= {epoch_ms(query.start)}ms AND time < {epoch_ms(query.stop)}ms"
        f" GROUP BY time({query.every_s}s) fill(none)"
    )


class InfluxV1Readings:
    """Reads a device's readings with InfluxQL over `/query` (`user:password` as the token)."""

    def __init__(self, url: str, database: str, token: str | None = None) -> None:
        auth = tuple(token.split(":", 1)) if token else None
        self._client = httpx.Client(base_url=url, timeout=READ_TIMEOUT, auth=auth)  # type: ignore[arg-type]
        self._database = database

    def readings(self, query: ReadingsQuery) -> Series:
        """Means per bucket, from InfluxDB."""
        params = {"db": self._database, "q": readings_influxql(query), "epoch": "ms"}
        try:
            response = self._client.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise StoreError(f"InfluxDB unreachable: {exc!r}", retryable=True) from None
        if response.status_code != 200:
            raise classify(response.status_code, response.text)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise StoreError(f"InfluxDB answered: {response.text[:300]}", retryable=True) from None
        return _series(body, query.fields)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _series(body: dict[str, Any], fields: Sequence[str]) -> Series:
    """The means of an InfluxQL answer (`epoch=ms`) by field."""
    if "error" in body:
        raise StoreError(f"InfluxDB: {str(body['error'])[:300]}", retryable=False)
    found: Series = {name: [] for name in fields}
    for result in body.get("results", []):
        error = result.get("error")
        if error is not None:
            # Nothing written yet: the sink creates the database with its first write.
            if str(error).startswith("database not found"):
                continue
            raise StoreError(f"InfluxDB: {str(error)[:300]}", retryable=False)
        for series in result.get("series", []):
            columns = series["columns"]
            for row in series["values"]:
                at = from_epoch_ms(int(row[0]))
                for name, value in zip(columns[1:], row[1:], strict=True):
                    if value is not None and name in found:
                        found[name].append((at, float(value)))
    return found

"""The embedded time-series store: a SQLite file in the data dir, for zero set-up.

It keeps InfluxDB's rule that a point is identified by measurement, tags and time: writing
it again merges the fields instead of adding a row.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import StoreError
from core.points import Point
from core.readings import ReadingsQuery, Series, epoch_ms, from_epoch_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    series TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    device TEXT,
    tags TEXT NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (measurement, series, time_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_by_device ON points (device, measurement, time_ms);
"""

UPSERT = """
INSERT INTO points (measurement, series, time_ms, device, tags, fields)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (measurement, series, time_ms)
DO UPDATE SET fields = json_patch(points.fields, excluded.fields)
"""


def _series(point: Point) -> str:
    return ",".join(f"{k}={point.tags[k]}" for k in sorted(point.tags))


class EmbeddedSink:
    """Stores points in SQLite; reads for the API use their own connections."""

    name = "embedded"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = self._connect()
        self._db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def write(self, points: Sequence[Point]) -> None:
        """Upsert one batch in one transaction."""
        rows = [
            (
                p.measurement,
                _series(p),
                p.time_ms,
                p.tags.get("device"),
                json.dumps(p.tags, separators=(",", ":")),
                json.dumps(p.fields, separators=(",", ":")),
            )
            for p in points
        ]
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany(UPSERT, rows)
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise StoreError(f"embedded store: {exc}", retryable=True) from None

    def query(self, measurement: str, device: str | None = None, limit: int = 100) -> list[Point]:
        """Points of a measurement, newest first."""
        sql = "SELECT measurement, tags, fields, time_ms FROM points WHERE measurement = ?"
        args: list[Any] = [measurement]
        if device is not None:
            sql += " AND device = ?"
            args.append(device)
        sql += " ORDER BY time_ms DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Point(m, json.loads(t), json.loads(f), ms) for m, t, f, ms in rows]

    def count(self, measurement: str) -> int:
        """Number of points of a measurement."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT count(*) FROM points WHERE measurement = ?", (measurement,)
            ).fetchone()
        return int(n)

    def ping(self) -> bool:
        """The file is always there."""
        return True

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


class EmbeddedReadings:
    """Reads a device's readings from the embedded store, averaged per bucket in SQL, over a
    read-only connection of its own per query (the writer's lock is never waited for)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def readings(self, query: ReadingsQuery) -> Series:
        """Means per bucket; buckets start at multiples of `every_s` since 1970 (as InfluxDB's)."""
        every_ms = query.every_s * 1000
        means = ", ".join("avg(json_extract(fields, ?))" for _ in query.fields)
        # Times are from 1970 on (core/readings.py): integer division floors them.
        sql = (
            f"SELECT (time_ms / ?) * ? AS bucket, {means} FROM points"  # values only as ?
            " WHERE device = ? AND measurement = 'reading' AND time_ms >= ? AND time_ms < ?"
            " GROUP BY bucket ORDER BY bucket"
        )
        args = [
            every_ms,
            every_ms,
            *(f"$.{name}" for name in query.fields),
            query.device,
            epoch_ms(query.start),
            epoch_ms(query.stop),
        ]
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            try:
                rows = db.execute(sql, args).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"embedded store: {exc}", retryable=True) from None
        series: Series = {name: [] for name in query.fields}
        for bucket, *values in rows:
            at = from_epoch_ms(bucket)
            for name, value in zip(query.fields, values, strict=True):
                if value is not None:
                    series[name].append((at, float(value)))
        return series

    def close(self) -> None:
        """Nothing is held open between queries."""

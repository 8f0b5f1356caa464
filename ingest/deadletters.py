"""The dead-letter store: rejected messages with their reasons, in a SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingest.records import DeadLetter

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,            -- the spool LSN: a replayed record is stored once
    received_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    institution TEXT,
    device TEXT,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_reason ON dead_letters (reason, id);
CREATE INDEX IF NOT EXISTS dead_letters_by_device ON dead_letters (device, id);
"""


class DeadLetterStore:
    """Append-mostly storage of dead letters, listed newest first."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def add_many(self, letters: Sequence[tuple[int, DeadLetter]]) -> None:
        """Store dead letters keyed by spool LSN; a key seen before is ignored."""
        rows = [
            (
                lsn,
                d.received_ms,
                d.topic,
                d.reason,
                d.detail,
                d.institution,
                d.device,
                d.size,
                d.payload,
            )
            for lsn, d in letters
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            self._db.execute("COMMIT")

    def list(
        self,
        *,
        reason: str | None = None,
        device: str | None = None,
        institution: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[tuple[int, DeadLetter]]:
        """Dead letters, newest first, filtered; page with `before_id`."""
        where: list[str] = ["1=1"]
        args: list[object] = []
        for column, value in (("reason", reason), ("device", device), ("institution", institution)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        sql = (
            "SELECT id, received_ms, topic, reason, detail, payload, size, institution, device "
            f"FROM dead_letters WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [(row[0], DeadLetter(*row[1:])) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of dead letters per reason."""
        with self._lock:
            rows: list[Any] = self._db.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason"
            ).fetchall()
        return {reason: int(n) for reason, n in rows}

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

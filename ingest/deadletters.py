"""The dead-letter store: rejected messages with their reasons, in a SQLite file, on a budget."""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from core.clock import to_epoch_ms
from ingest.records import DeadLetter

log = logging.getLogger(__name__)
T = TypeVar("T")

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
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (received_ms);
"""
# Every dead letter ever kept, by reason: pruning the old ones leaves these alone. A trigger
# counts only the rows really inserted (a replayed LSN is ignored, and not counted).
COUNTS = (
    "CREATE TABLE dead_letter_counts (reason TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    """CREATE TRIGGER dead_letters_counted AFTER INSERT ON dead_letters BEGIN
        INSERT INTO dead_letter_counts (reason, n) VALUES (NEW.reason, 1)
        ON CONFLICT (reason) DO UPDATE SET n = n + 1;
    END""",
    """INSERT INTO dead_letter_counts (reason, n)
        SELECT reason, count(*) FROM dead_letters GROUP BY reason""",
)
DEFAULT_KEEP = timedelta(days=30)
DEFAULT_MAX_BYTES = 512 * 2**20
PRUNE_BATCH = 5000  # rows per transaction, so that listing and adding wait little meanwhile
PRUNE_TO = 0.9  # over the size budget, prune to this share of it, not just under it


class DeadLetterStore:
    """Append-mostly storage of dead letters, listed newest first."""

    def __init__(
        self, path: Path, *, keep: timedelta = DEFAULT_KEEP, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        """Dead letters older than `keep`, or beyond `max_bytes` in the file, go at `prune`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if not self._tables():
            # A new file gives pages freed by pruning back to the disk (incremental_vacuum);
            # this has to be set before the first table.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._write(self._add_counts)

    def _add_counts(self, db: sqlite3.Connection) -> None:
        """Count by reason in a file that does not yet (a new one, or one from before)."""
        if "dead_letter_counts" not in self._tables():  # checked under the write lock
            for statement in COUNTS:
                db.execute(statement)

    def _tables(self) -> set[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(db)` in one transaction, rolled back on any failure.

        Otherwise a failed write (disk full, I/O error) would leave the transaction open, and
        every later BEGIN would fail with "cannot start a transaction within a transaction".
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = work(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return result

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
            self._db.execute("ROLLBACK")

    def add_many(self, letters: Sequence[tuple[int, DeadLetter]]) -> bool:
        """Store dead letters keyed by spool LSN; a key seen before is ignored.

        False when the database refused the write (disk full, I/O error): it is rolled back
        and logged, never raised, so that the digester and the forwarder go on; both write
        the same dead letters (same LSNs), so the second one may still store them.
        """
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
        sql = "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        try:
            with self._lock:
                self._write(lambda db: db.executemany(sql, rows))
        except sqlite3.Error as exc:
            log.error("cannot store %d dead letters (from LSN %d): %s", len(rows), rows[0][0], exc)
            return False
        return True

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
        """Number of dead letters ever kept, per reason (pruned ones included)."""
        with self._lock:
            rows: list[Any] = self._db.execute(
                "SELECT reason, n FROM dead_letter_counts WHERE n > 0"
            ).fetchall()
        return {reason: int(n) for reason, n in rows}

    def prune(self, now: datetime) -> int:
        """Delete, oldest first, what is older than the budget's age or over its size.

        Returns how many dead letters were deleted.
        """
        cutoff = to_epoch_ms(now - self.keep)
        removed = 0
        while done := self._delete("WHERE received_ms < ?", (cutoff,), PRUNE_BATCH):
            removed += done
        removed += self._prune_size()
        if removed:
            with self._lock:  # executescript steps to the end; execute frees one page
                self._db.executescript("PRAGMA incremental_vacuum;")
            log.info(
                "dead letters: %d deleted, older than %s or beyond %d bytes",
                removed,
                self.keep,
                self.max_bytes,
            )
        return removed

    def _prune_size(self) -> int:
        """Over the size budget: delete the oldest until the file holds PRUNE_TO of it."""
        used = self.used_bytes()
        if used <= self.max_bytes:
            return 0
        target = int(self.max_bytes * PRUNE_TO)
        removed = 0
        while used > target:
            with self._lock:
                rows = int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
            if not rows:
                break
            # The oldest, as many as the excess is a share of the whole; pages are freed as
            # whole pages empty, so look again and go on.
            share = math.ceil(rows * (used - target) / used)
            removed += self._delete("ORDER BY id", (), min(max(share, 1), PRUNE_BATCH))
            used = self.used_bytes()
        return removed

    def _delete(self, where: str, args: tuple[int, ...], limit: int) -> int:
        """Delete up to `limit` rows chosen by `where` in one transaction; how many went."""
        sql = f"DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters {where} LIMIT ?)"
        with self._lock:
            cursor = self._write(lambda db: db.execute(sql, (*args, limit)))
        return int(cursor.rowcount)

    def used_bytes(self) -> int:
        """Bytes of the file that hold data (pages in use; free pages are reused)."""
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

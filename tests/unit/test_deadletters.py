"""The dead-letter store: a failed write never wedges it, and it keeps to its budget."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.clock import to_epoch_ms
from ingest.deadletters import SCHEMA, DeadLetterStore
from ingest.records import DeadLetter

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def letter(
    reason: str = "bad_json", *, age: timedelta = timedelta(0), size: int = 10
) -> DeadLetter:
    payload = b"x" * size
    return DeadLetter(
        received_ms=to_epoch_ms(NOW - age),
        topic="hazardwatch/v1/inst-1/dev-1/telemetry",
        reason=reason,
        detail="not JSON",
        payload=payload,
        size=len(payload),
        institution="inst-1",
        device="dev-1",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeadLetterStore]:
    opened = DeadLetterStore(tmp_path / "deadletters.sqlite")
    yield opened
    opened.close()


def ids(store: DeadLetterStore) -> list[int]:
    return sorted(lsn for lsn, _ in store.list(limit=1000))


def test_a_failed_write_is_rolled_back_and_the_next_one_works(
    store: DeadLetterStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_many([(1, letter())])
    # The disk is "full": SQLite may not grow the file beyond its current pages.
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    big = [(lsn, letter(size=8000)) for lsn in range(2, 40)]
    with caplog.at_level(logging.ERROR, logger="ingest.deadletters"):
        assert store.add_many(big) is False  # never raised into the digester or forwarder
    assert "cannot store 38 dead letters (from LSN 2): database or disk is full" in caplog.text
    assert not store._db.in_transaction
    store._db.execute("PRAGMA max_page_count = 1073741823")  # space again
    assert store.add_many([(100, letter("invalid_field"))]) is True
    assert ids(store) == [1, 100]  # nothing of the failed batch, and later writes work
    assert store.counts() == {"bad_json": 1, "invalid_field": 1}
    store.add_many(big)
    assert len(ids(store)) == 2 + len(big)


def test_a_replayed_record_is_kept_and_counted_once(store: DeadLetterStore) -> None:
    store.add_many([(1, letter()), (2, letter("invalid_field"))])
    store.add_many([(1, letter()), (2, letter("invalid_field")), (3, letter())])
    assert ids(store) == [1, 2, 3]
    assert store.counts() == {"bad_json": 2, "invalid_field": 1}


def test_prune_deletes_what_is_older_than_the_age_limit(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite", keep=timedelta(days=30))
    ages = {1: 40, 2: 31, 3: 29, 4: 1, 5: 35}  # lsn -> days old
    store.add_many([(lsn, letter(age=timedelta(days=d))) for lsn, d in ages.items()])
    assert store.prune(NOW) == 3
    assert ids(store) == [3, 4]
    assert store.prune(NOW) == 0
    assert store.counts() == {"bad_json": 5}, "counts cover every dead letter ever kept"
    store.close()


def test_prune_deletes_the_oldest_until_the_file_is_within_its_size(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite"
    store = DeadLetterStore(path, max_bytes=256 * 1024)
    store.add_many([(lsn, letter(size=2000)) for lsn in range(1, 501)])  # about 1 MiB
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size > store.max_bytes
    assert store.used_bytes() > store.max_bytes
    removed = store.prune(NOW)
    kept = ids(store)
    assert removed == 500 - len(kept) > 0
    assert kept == list(range(501 - len(kept), 501)), "the newest are kept"
    assert store.used_bytes() > 0.6 * store.max_bytes, "no more than it takes to fit"
    assert store.used_bytes() <= store.max_bytes
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size <= store.max_bytes, "freed pages go back to the disk"
    assert store.counts() == {"bad_json": 500}
    store.add_many([(501, letter())])  # and it goes on working
    assert ids(store)[-1] == 501
    store.close()


def test_a_store_within_its_budget_loses_nothing(store: DeadLetterStore) -> None:
    store.add_many([(lsn, letter(age=timedelta(days=1))) for lsn in range(1, 11)])
    assert store.prune(NOW) == 0
    assert ids(store) == list(range(1, 11))


def test_a_file_from_before_the_budget_keeps_its_counts(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA)
    row = "INSERT INTO dead_letters VALUES (?, 0, 't', ?, 'd', NULL, NULL, 1, x'00')"
    old.executemany(row, [(1, "bad_json"), (2, "bad_json"), (3, "unknown_topic")])
    old.commit()
    old.close()
    store = DeadLetterStore(path)
    assert store.counts() == {"bad_json": 2, "unknown_topic": 1}
    store.add_many([(4, letter("unknown_topic"))])
    assert store.counts() == {"bad_json": 2, "unknown_topic": 2}
    store.close()
    reopened = DeadLetterStore(path)
    assert reopened.counts() == {"bad_json": 2, "unknown_topic": 2}
    reopened.close()

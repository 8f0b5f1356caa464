"""SQLite set-up: the write-ahead log is checkpointed in the background, not by commits."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from core.db import WAL_AUTOCHECKPOINT_PAGES, WalCheckpointer, make_engine


def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        pages = connection.execute(text("PRAGMA wal_autocheckpoint")).scalar()
        assert pages == WAL_AUTOCHECKPOINT_PAGES
        connection.execute(text("CREATE TABLE t (x TEXT)"))
    for _ in range(50):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": "y" * 4000})
    checkpointer = WalCheckpointer(engine)
    busy, log_pages, copied = checkpointer.checkpoint()
    assert busy == 0 and log_pages >= 50, "the commits left their pages in the log"
    assert copied == log_pages
    engine.dispose()


def test_the_checkpointer_is_needed_only_for_sqlite(tmp_path: Path) -> None:
    other = WalCheckpointer(make_engine("postgresql+psycopg://u:p@127.0.0.1:1/none"))
    assert not other.needed, "no task for it: PostgreSQL has no WAL file of ours"
    assert WalCheckpointer(make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")).needed

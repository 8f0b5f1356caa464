"""The database watch: statements in flight tell whether the database answers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.db import DatabaseUnavailableError, DatabaseWatch, make_engine


def test_a_statement_that_does_not_return_makes_the_database_away(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    watch = DatabaseWatch(engine, patience_s=0.05)
    entered, release = threading.Event(), threading.Event()

    def slow(_x: int) -> int:  # a statement that hangs, as on a server that does not answer
        entered.set()
        release.wait(5)
        return 1

    with engine.connect() as connection:
        connection.connection.driver_connection.create_function("slow", 1, slow)  # type: ignore[union-attr]
        worker = threading.Thread(target=lambda: connection.execute(text("SELECT slow(1)")))
        worker.start()
        assert entered.wait(5)
        threading.Event().wait(0.1)
        assert watch.away and watch.waiting_s() >= 0.05
        with pytest.raises(DatabaseUnavailableError, match="not answered"):
            watch.check()
        release.set()
        worker.join()
    assert not watch.away and watch.waiting_s() == 0.0
    watch.check()


def test_a_failed_statement_leaves_nothing_in_flight(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    watch = DatabaseWatch(engine, patience_s=0.0)
    with engine.connect() as connection, pytest.raises(OperationalError):
        connection.execute(text("SELECT * FROM no_such_table"))
    assert watch.waiting_s() == 0.0 and not watch.away

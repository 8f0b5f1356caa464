"""The migrations create exactly the tables the code declares (SQLite; PostgreSQL in CI runs
the same migrations through the integration tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from alerts.tables import metadata as alert_metadata
from core.audit import metadata as audit_metadata
from core.checkpoints import metadata as checkpoint_metadata
from core.db import make_engine, upgrade
from core.lockout import metadata as lockout_metadata
from core.registry.tables import Base
from core.sessions import metadata as session_metadata
from core.users import metadata as user_metadata
from tickets.tables import metadata as ticket_metadata


@pytest.mark.parametrize(
    "metadata",
    [
        Base.metadata,
        alert_metadata,
        ticket_metadata,
        user_metadata,
        checkpoint_metadata,
        session_metadata,
        lockout_metadata,
        audit_metadata,
    ],
    ids=["registry", "alerts", "tickets", "users", "checkpoints", "sessions", "lockout", "audit"],
)
def test_the_schema_after_migrating_is_the_declared_one(tmp_path: Path, metadata: MetaData) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs: list[Any] = compare_metadata(context, metadata)
    engine.dispose()
    ours = set(metadata.tables)
    # Tables of the other parts show up as "remove_table": not this part's business.
    relevant = [d for d in diffs if not (d[0] == "remove_table" and d[1].name not in ours)]
    relevant = [d for d in relevant if not (d[0] == "remove_index" and d[1].table.name not in ours)]
    assert relevant == []

"""Positions in the event log of the consumers that keep their state in the SQL database.

A consumer that writes to the database (the alerts projection, the ledger) stores its
position there, in the transaction of its writes where it can: after a crash, or a restore
of the database from a backup, it resumes exactly where its stored state ends.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, Engine, MetaData, String, Table, select

metadata = MetaData()

consumer_checkpoints = Table(
    "consumer_checkpoints",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
)


def load_position(connection: Connection, name: str, *, lock: bool = False) -> int:
    """The stored position of `name`; 0 (the start) if it has none. With `lock`, the row is
    held until the transaction ends (two writers of one consumer take turns)."""
    query = select(consumer_checkpoints.c.position).where(consumer_checkpoints.c.name == name)
    if lock:
        query = query.with_for_update()
    value = connection.execute(query).scalar()
    return int(value or 0)


def save_position(connection: Connection, name: str, position: int) -> None:
    """Store the position of `name` in the caller's transaction."""
    table = consumer_checkpoints
    done = connection.execute(table.update().where(table.c.name == name).values(position=position))
    if done.rowcount == 0:
        connection.execute(table.insert().values(name=name, position=position))


class SqlCheckpoints:
    """`load` and `save` of positions, each in a transaction of its own."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self, name: str) -> int:
        """The stored position of `name` (0: none)."""
        with self._engine.connect() as connection:
            return load_position(connection, name)

    def save(self, name: str, position: int) -> None:
        """Store the position of `name`."""
        with self._engine.begin() as connection:
            save_position(connection, name, position)

"""SQLite helpers shared by the study store and the coordinator database.

One way to run a write transaction, and one way to migrate a database step
by step (schema version in ``PRAGMA user_version``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: One migration step: an SQL script, or a function that migrates data on the connection.
Step = str | Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class ByDialect:
    """A migration step written differently for SQLite and for PostgreSQL (one history, two dialects)."""

    sqlite: Step
    postgresql: Callable[[Any], None]


@contextmanager
def transaction(connection: sqlite3.Connection):
    """A write transaction on a connection in autocommit mode: all or nothing."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def statements(script: str) -> list[str]:
    """The statements of a migration script (a trigger body's semicolons stay inside its statement)."""
    out, pending = [], ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending.strip())
    return out


def migrate(connection: sqlite3.Connection, migrations: Sequence[Step | ByDialect]) -> tuple[int, int]:
    """Apply the missing migration steps in order, each in its own write transaction.

    A step is an SQL script or a function of the connection. The version is
    read again inside each transaction (which holds the write lock), so two
    programs opening a new or old database at once apply every step once.

    Returns
    -------
    (before, after)
        The schema versions; ``before > len(migrations)`` means the database is
        newer than this program and nothing was done.
    """
    before = connection.execute("PRAGMA user_version").fetchone()[0]
    while True:
        with transaction(connection):
            step = connection.execute("PRAGMA user_version").fetchone()[0]
            if step >= len(migrations):
                break
            migration = migrations[step]
            if isinstance(migration, ByDialect):
                migration = migration.sqlite
            if callable(migration):
                migration(connection)
            else:
                for statement in statements(migration):
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {step + 1}")
    return before, max(before, len(migrations))

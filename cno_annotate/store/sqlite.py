"""SQLite helpers shared by the study store and the coordinator database.

One way to run a write transaction, and one way to migrate a database step
by step (schema version in ``PRAGMA user_version``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import contextmanager

#: One migration step: an SQL script, or a function that migrates data on the connection.
Step = str | Callable[[sqlite3.Connection], None]


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
    """The statements of a migration script."""
    return [s.strip() for s in script.split(";") if s.strip()]


def migrate(connection: sqlite3.Connection, migrations: Sequence[Step]) -> tuple[int, int]:
    """Apply the missing migration steps in order, each in its own transaction.

    Returns
    -------
    (before, after)
        The schema versions; ``before > len(migrations)`` means the database is
        newer than this program and nothing was done.
    """
    before = connection.execute("PRAGMA user_version").fetchone()[0]
    for step in range(before, len(migrations)):
        with transaction(connection):
            script = migrations[step]
            if callable(script):
                script(connection)
            else:
                for statement in statements(script):
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {step + 1}")
    return before, max(before, len(migrations))

"""Reading packages in the store: the packages a coordinator issued, their secret and UID pairs.

Also the mark of a reader store (the store inside a package): triggers that
refuse any change to the reading study's set-up. :mod:`cno_annotate.packages`
holds the rules; writes here run inside the caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

#: The reader store marks itself with triggers of this name prefix (refusing the reading study's set-up).
READER_STORE_MARK = "reader_package_store_"
#: The reading study's set-up, which only the coordinator's store may change.
COORDINATOR_TABLES = ("reading_studies", "rs_cases", "rs_readers", "rs_worklists", "packages", "package_secrets",
                      "package_uids")


@dataclass(frozen=True)
class PackageRecord:
    """A package issued to one reader: its id, reading study, reader, key and the reading codes it holds."""

    package_id: str
    reading_study: str
    reader: str
    created: str
    content_hash: str
    results_key: str
    codes: tuple[str, ...]


def add_package(db: sqlite3.Connection, package: PackageRecord) -> None:
    """Record an issued package."""
    db.execute("INSERT INTO packages (package_id, reading_study, reader, created, content_hash, results_key, codes) "
               "VALUES (?,?,?,?,?,?,?)",
               (package.package_id, package.reading_study, package.reader, package.created, package.content_hash,
                package.results_key, json.dumps(list(package.codes))))


def package(db: sqlite3.Connection, package_id: str) -> PackageRecord | None:
    """The package with this id (None if this store issued none)."""
    row = db.execute("SELECT * FROM packages WHERE package_id = ?", (package_id,)).fetchone()
    if row is None:
        return None
    return PackageRecord(row["package_id"], row["reading_study"], row["reader"], row["created"], row["content_hash"],
                         row["results_key"], tuple(json.loads(row["codes"])))


def secret(db: sqlite3.Connection, name: str) -> str | None:
    """The reading study's package secret in hexadecimal (None before its first package)."""
    row = db.execute("SELECT secret FROM package_secrets WHERE reading_study = ?", (name,)).fetchone()
    return None if row is None else row["secret"]


def add_secret(db: sqlite3.Connection, name: str, text: str) -> None:
    """Keep a reading study's secret, unless it has one already."""
    db.execute("INSERT OR IGNORE INTO package_secrets (reading_study, secret) VALUES (?, ?)", (name, text))


def add_uid_pairs(db: sqlite3.Connection, name: str, pairs: dict[str, str]) -> None:
    """Record source UID -> stand-in UID pairs of a reading study (pairs recorded already are kept)."""
    db.executemany("INSERT OR IGNORE INTO package_uids (reading_study, source_uid, package_uid) VALUES (?,?,?)",
                   [(name, source, new) for source, new in sorted(pairs.items())])


def uid_pairs(db: sqlite3.Connection, name: str) -> dict[str, str]:
    """Source UID -> stand-in UID of every pair recorded for a reading study."""
    return {r["source_uid"]: r["package_uid"] for r in db.execute(
        "SELECT source_uid, package_uid FROM package_uids WHERE reading_study = ?", (name,))}


# -- the reader store ------------------------------------------------------------------------
def mark_reader_store(db: sqlite3.Connection, refusal: str) -> None:
    """Triggers that refuse any change to the reading study's set-up with ``refusal``: the mark of a reader store."""
    message = refusal.replace("'", "''")
    for table in COORDINATOR_TABLES:
        for change in ("INSERT", "UPDATE", "DELETE"):
            db.execute(f"CREATE TRIGGER {READER_STORE_MARK}{table}_{change.lower()} BEFORE {change} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{message}'); END")


def is_reader_store(db: sqlite3.Connection) -> bool:
    """Whether the store is a package's reader store (marked by :func:`mark_reader_store`; never a server store)."""
    if getattr(db, "dialect", "sqlite") != "sqlite":
        return False
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                      (f"{READER_STORE_MARK}packages_insert",)).fetchone() is not None


def compact(db: sqlite3.Connection) -> None:
    """Fold the write-ahead log into the file and rewrite it, so no deleted row survives in a free page."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")

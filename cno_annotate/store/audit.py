"""The audit trail: every change appended with who, when and what, hash-chained.

Each entry's hash is the SHA-256 of the previous entry's hash and the
entry's own canonical JSON, so editing or deleting any entry breaks the
chain from there on; the last sequence number and hash are also kept in
``audit_head``, so cutting entries off the end is caught too. :func:`verify`
names the first broken entry. Entries are written in the same transaction as
the change they record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

from cno_annotate.store.db import now

GENESIS = "0" * 64


def _digest(prev_hash: str, seq: int, at: str, actor: str, action: str, entity: str, detail: str) -> str:
    body = json.dumps([seq, at, actor, action, entity, detail], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def append(db: sqlite3.Connection, actor: str, action: str, entity: str, before=None, after=None, **extra) -> int:
    """Append an entry inside the caller's transaction; returns its sequence number.

    Parameters
    ----------
    actor : str
        Who: a reader id, or ``coordinator``.
    action : str
        What: ``create``, ``change``, ``delete``, ``submit``, ``export``, ...
    entity : str
        Which object, e.g. ``read:<id>``, ``lesion:<read>/<lesion>``.
    before, after : JSON-serialisable, optional
        The state before and after the change.
    """
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = now()
    detail = json.dumps({"before": before, "after": after, **extra}, ensure_ascii=False, sort_keys=True)
    digest = _digest(prev, seq, at, actor, action, entity, detail)
    db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)", (seq, at, actor, action, entity, detail, prev, digest))
    db.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", (seq, digest))
    return seq


@dataclass(frozen=True)
class Verification:
    """The result of checking the chain."""

    entries: int
    broken_at: int | None
    reason: str

    @property
    def ok(self) -> bool:
        """Whether the whole chain is intact."""
        return self.broken_at is None


def verify(db: sqlite3.Connection) -> Verification:
    """Recompute the chain; report the first entry that was edited, removed or reordered."""
    expected_seq, prev = 1, GENESIS
    count = 0
    for row in db.execute("SELECT seq, at, actor, action, entity, detail, prev_hash, hash FROM audit ORDER BY seq"):
        seq, at, actor, action, entity, detail, prev_hash, digest = row
        count += 1
        if seq != expected_seq:
            return Verification(count, expected_seq, f"entry {expected_seq} is missing (next is {seq})")
        if prev_hash != prev:
            return Verification(count, seq, f"entry {seq} does not follow entry {seq - 1} (previous hash differs)")
        if _digest(prev_hash, seq, at, actor, action, entity, detail) != digest:
            return Verification(count, seq, f"entry {seq} was changed after it was written (hash differs)")
        expected_seq, prev = seq + 1, digest
    head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if head is not None and (head[0] != expected_seq - 1 or head[1] != prev):
        if head[0] >= expected_seq:
            return Verification(count, expected_seq, f"entry {expected_seq} is missing (the chain ends early)")
        return Verification(count, head[0], f"entry {head[0]} does not match the recorded end of the chain")
    if head is None and count:
        return Verification(count, 1, "the recorded end of the chain is missing")
    return Verification(count, None, f"audit chain intact: {count} entries")


def entries(db: sqlite3.Connection, last: int = 20) -> list[dict]:
    """The latest entries, newest last."""
    rows = db.execute("SELECT seq, at, actor, action, entity, detail FROM audit ORDER BY seq DESC LIMIT ?", (last,))
    out = [dict(zip(("seq", "at", "actor", "action", "entity", "detail"), r)) for r in rows]
    for entry in out:
        entry["detail"] = json.loads(entry["detail"])
    return out[::-1]

"""A hash chain per audited object (store schema 22): what it links, and what verify finds when it is tampered with.

Each object's entries follow one another; an object's first entry follows the spine (the chain of first
entries and of the entries written before schema 22). Edits of different reads then never wait on one
another's chain, and an attacker with an SQLite shell still cannot delete a whole read's chain, move an
entry to another chain, insert or reorder entries without ``audit verify`` (or the anchor) saying so.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from cno_annotate.annotation.reads import ReadSession
from cno_annotate.store import Store, audit
from tests.test_audit_tamper import _rechain

SERIES = "1.2.3"
LEGACY = Path(__file__).parent / "legacy_stores" / "store-v3.sqlite"


@pytest.fixture
def two_reads(sample_copy) -> tuple[Store, str, str]:
    """A store with two readers' drafts of the sample study, edited in turns."""
    store = sample_copy()
    uid = store.studies()[0].study_uid
    a = ReadSession.open_or_create(store, uid, "dr-a")
    b = ReadSession.open_or_create(store, uid, "dr-b")
    for session in (a, b, a, b):
        session.add_lesion((1.0, 2.0, 3.0), SERIES, (1, 2, 3), site_id="femur.distal", side="R")
    a.mark_unit("spine.L5", "no_lesion")
    return store, a.read.read_id, b.read.read_id


def _attacker(store: Store) -> sqlite3.Connection:
    return sqlite3.connect(store.root / "store.sqlite", isolation_level=None)


def _entries(store: Store, entity: str) -> list[tuple[int, int, str, str]]:
    """(seq, prev_seq, prev_hash, hash) of an object's entries, in order."""
    return store.db.execute("SELECT seq, prev_seq, prev_hash, hash FROM audit WHERE entity = ? ORDER BY seq",
                            (entity,)).fetchall()


def test_each_reads_entries_follow_one_another_and_first_entries_follow_the_spine(two_reads):
    store, a, b = two_reads
    spine_before = 0
    for read_id in (a, b):
        entries = _entries(store, f"read:{read_id}")
        assert len(entries) >= 3
        first = entries[0]
        assert first[1] < first[0]  # the first entry follows an earlier entry on the spine
        for previous, entry in zip(entries, entries[1:]):
            assert (entry[1], entry[2]) == (previous[0], previous[3])  # this read's previous entry, not the store's
        head = store.db.execute("SELECT seq, hash FROM audit_heads WHERE entity = ?", (f"read:{read_id}",)).fetchone()
        assert tuple(head) == (entries[-1][0], entries[-1][3])
        spine_before = max(spine_before, first[0])
    assert store.db.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()[0] == spine_before
    assert audit.verify(store.db).ok


def _delete_read_and_its_chain(store: Store, read_id: str) -> None:
    db = _attacker(store)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    for table in ("lesions", "unit_marks", "reads"):
        db.execute(f"DELETE FROM {table} WHERE read_id = ?", (read_id,))
    db.execute("DELETE FROM audit WHERE entity = ?", (f"read:{read_id}",))
    db.execute("DELETE FROM audit_heads WHERE entity = ?", (f"read:{read_id}",))
    db.close()


def test_deleting_a_whole_reads_chain_with_the_read_breaks_the_spine(two_reads):
    store, a, b = two_reads
    opened_a, opened_b = _entries(store, f"read:{a}")[0][0], _entries(store, f"read:{b}")[0][0]
    _delete_read_and_its_chain(store, a)  # a's chain began before b's: b's first entry names it
    result = audit.verify(store.db)
    assert not result.ok and result.reason == f"entry {opened_a} is missing (next is {opened_b})"


def test_deleting_the_newest_chain_with_its_read_is_found_by_the_spines_end(two_reads):
    store, _, b = two_reads
    opened_b = _entries(store, f"read:{b}")[0][0]
    _delete_read_and_its_chain(store, b)
    result = audit.verify(store.db)
    assert not result.ok and result.reason == f"entry {opened_b} is missing (the chain ends early)"


def test_deleting_a_whole_chain_and_rewriting_the_rest_is_found_with_the_anchor(two_reads):
    store, a, b = two_reads
    anchor = audit.anchor(store.db)  # at a's newest entry
    _delete_read_and_its_chain(store, b)
    db = _attacker(store)
    _rechain(db, 1)
    db.close()
    assert audit.verify(store.db).ok  # consistent in itself: only what is kept outside the store can tell
    result = audit.verify(store.db, anchor)
    assert not result.ok and "differs from the anchor" in result.reason


def test_entries_cut_off_the_end_of_an_older_reads_chain_are_found(two_reads):
    store, a, _ = two_reads
    last = _entries(store, f"read:{a}")[-1][0]
    db = _attacker(store)
    db.execute("DELETE FROM audit WHERE seq = ?", (last,))
    db.close()
    result = audit.verify(store.db)
    assert (result.broken_at, result.reason) == (last, f"entry {last} is missing (the chain ends early)")


def test_moving_an_entry_to_another_reads_chain_is_found(two_reads):
    store, a, b = two_reads
    moved = _entries(store, f"read:{a}")[-2][0]
    db = _attacker(store)
    db.execute("UPDATE audit SET entity = ? WHERE seq = ?", (f"read:{b}", moved))
    db.close()
    result = audit.verify(store.db)
    assert not result.ok and result.broken_at is not None and result.broken_at > 0
    assert str(moved) in result.reason


def test_moving_an_entry_to_another_chain_and_rewriting_is_found_with_the_anchor(two_reads):
    store, a, b = two_reads
    anchor = audit.anchor(store.db)
    moved = _entries(store, f"read:{a}")[1][0]
    db = _attacker(store)
    db.execute("UPDATE audit SET entity = ?, prev_seq = (SELECT MAX(seq) FROM audit WHERE entity = ? AND seq < ?) "
               "WHERE seq = ?", (f"read:{b}", f"read:{b}", moved, moved))
    for later in [row[0] for row in _entries(store, f"read:{a}") if row[0] > moved][:1]:
        db.execute("UPDATE audit SET prev_seq = (SELECT MAX(seq) FROM audit WHERE entity = ? AND seq < ?) "
                   "WHERE seq = ?", (f"read:{a}", later, later))
    _rechain(db, 1)
    db.close()
    assert not audit.verify(store.db, anchor).ok


def test_an_entry_inserted_into_a_chain_is_found(two_reads):
    store, a, _ = two_reads
    entries = _entries(store, f"read:{a}")
    newest = store.db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    db = _attacker(store)
    db.execute("INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq) "
               "SELECT ?, at, actor, action, entity, detail, prev_hash, hash, prev_seq "
               "FROM audit WHERE seq = ?", (newest + 1, entries[1][0]))  # a copy of an earlier entry, placed last
    db.close()
    result = audit.verify(store.db)
    assert (result.broken_at, result.reason) == (
        newest + 1, f"entry {newest + 1} does not follow entry {entries[-1][0]} (it names entry {entries[0][0]})")


def test_two_entries_of_a_chain_swapped_are_found(two_reads):
    store, a, _ = two_reads
    entries = _entries(store, f"read:{a}")
    first, second = entries[1][0], entries[2][0]
    db = _attacker(store)
    db.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (first,))
    db.execute("UPDATE audit SET seq = ? WHERE seq = ?", (first, second))
    db.execute("UPDATE audit SET seq = ? WHERE seq = -1", (second,))
    db.close()
    result = audit.verify(store.db)
    assert not result.ok and result.broken_at in (first, second)


def test_the_spines_recorded_end_is_checked(two_reads):
    store, _, b = two_reads
    opened_b = _entries(store, f"read:{b}")[0][0]
    db = _attacker(store)
    db.execute("UPDATE audit_head SET hash = ?", ("f" * 64,))
    db.close()
    result = audit.verify(store.db)
    assert (result.broken_at, result.reason) == (opened_b, f"entry {opened_b} does not match the recorded end of "
                                                           f"the chain")


def test_a_missing_chain_end_names_the_object(two_reads):
    store, a, _ = two_reads
    db = _attacker(store)
    db.execute("DELETE FROM audit_heads WHERE entity = ?", (f"read:{a}",))
    db.close()
    result = audit.verify(store.db)
    assert (result.broken_at, result.reason) == (_entries(store, f"read:{a}")[0][0],
                                                 f"the recorded end of the chain of read:{a} is missing")


def test_an_anchor_covers_every_chain_not_only_the_newest_entry(two_reads):
    """Rewriting an older read's chain, with every hash and end recomputed, changes the anchor's digest."""
    store, a, _ = two_reads
    anchor = audit.anchor(store.db)
    assert audit.verify(store.db, anchor).ok
    first = _entries(store, f"read:{a}")[1][0]
    db = _attacker(store)
    db.execute("UPDATE audit SET actor = 'dr-z' WHERE seq = ?", (first,))
    _rechain(db, first)
    db.close()
    assert audit.verify(store.db).ok
    result = audit.verify(store.db, anchor)
    assert not result.ok and result.reason.startswith(f"the trail up to entry {anchor.split(':')[1]} differs from "
                                                      f"the anchor")


def test_a_store_from_before_chains_keeps_its_trail_and_its_old_anchor(tmp_path):
    """Entries written before schema 22 stay one chain; new entries chain per object after them."""
    root = tmp_path / "legacy"
    root.mkdir()
    shutil.copy(LEGACY, root / "store.sqlite")
    old = sqlite3.connect(root / "store.sqlite")
    last, digest = old.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    old.close()
    old_anchor = f"{audit.ANCHOR_PREFIX}:{last}:{digest}"  # what the program printed then
    store = Store.open(root)
    try:
        assert store.db.execute("SELECT COUNT(*) FROM audit WHERE prev_seq IS NOT NULL AND seq <= ?",
                                (last,)).fetchone()[0] == 0
        read_id = store.db.execute("SELECT read_id FROM reads WHERE status = 'draft' LIMIT 1").fetchone()
        if read_id is not None:
            ReadSession.open(store, read_id[0]).mark_unit("spine.L4", "no_lesion")
        assert store.db.execute("SELECT COUNT(*) FROM audit WHERE seq > ?", (last,)).fetchone()[0] > 0
        result = audit.verify(store.db, old_anchor)
        assert result.ok, result.reason
        assert audit.verify(store.db, audit.anchor(store.db)).ok
        db = _attacker(store)
        db.execute("UPDATE audit SET actor = 'dr-z' WHERE seq = 2")
        db.close()
        result = audit.verify(store.db)
        assert (result.broken_at, result.reason) == (2, "entry 2 was changed after it was written (hash differs)")
    finally:
        store.close()

"""Two windows or programs on one store: no lost update, locks and uniqueness held by the database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.documents import export_document, write_document
from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.errors import CnoError, ReadConflict, ReadLocked
from cno_annotate.store import Store, audit
from cno_annotate.store.db import INTERACTIVE_BUSY_TIMEOUT
from tests.conftest import integrity_error

STORE_BACKENDS = ("sqlite", "postgresql")

REPO = Path(__file__).resolve().parents[1]
STUDY = "1.2.826.0.1.3680043.99.5"
SERIES = "1.2.3"


def _second(store: Store) -> Store:
    """Another program's connection to the same store."""
    return Store.open(store.root)


def _started(store: Store, reader: str = "dr-a") -> ReadSession:
    session = ReadSession.open_or_create(store, STUDY, reader)
    session.add_lesion((1.0, 2.0, 3.0), SERIES, (1, 2, 3), site_id="femur.distal", side="R")
    return session


def test_two_process_harness_loses_no_update_and_makes_no_duplicate():
    """The seeded small run of stress/two_writers.py: every loss and duplicate figure is 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(REPO / "stress" / "two_writers.py"), "--ops", "30", "--rounds", "2",
                          "--seed", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    same = figures["same_read"]
    assert same["changes_committed"] + same["conflicts_reported"] == 60
    assert same["lost_updates"] == same["wrong_audit_before"] == same["store_differs_from_audit_replay"] == 0
    assert figures["drafts"]["duplicate_drafts"] == 0
    assert figures["successors"]["duplicate_successors"] == 0
    assert figures["schema"]["schema_race_failures"] == 0


def test_an_edit_from_a_stale_copy_is_refused_and_the_read_reloaded(store):
    mine = _started(store)
    lesion = mine.read.lesions[0].lesion_id
    theirs = ReadSession.open(_second(store), mine.read.read_id)
    theirs.update_lesion(lesion, comment="theirs")
    with pytest.raises(ReadConflict, match="changed in another window"):
        mine.update_lesion(lesion, comment="mine")
    assert mine.read.lesion(lesion).comment == "theirs"  # reloaded: the other change is shown
    assert not mine.can_undo
    mine.update_lesion(lesion, comment="mine")  # the retry on the fresh copy goes through
    assert load_read(store, mine.read.read_id).lesion(lesion).comment == "mine"
    entry = audit.entries(store.db, 1)[0]
    assert entry["detail"]["before"]["lesions"][lesion]["comment"] == "theirs"  # a true "before"


def test_lesions_added_from_two_copies_both_survive_with_distinct_ids(store):
    mine = _started(store)
    theirs = ReadSession.open(_second(store), mine.read.read_id)
    added = theirs.add_lesion((5.0, 5.0, 5.0), SERIES, (5, 5, 5))
    with pytest.raises(ReadConflict):
        mine.add_lesion((6.0, 6.0, 6.0), SERIES, (6, 6, 6))
    again = mine.add_lesion((6.0, 6.0, 6.0), SERIES, (6, 6, 6))
    assert again != added
    assert {l.lesion_id for l in load_read(store, mine.read.read_id).lesions} == {"L1", added, again}


def test_undo_after_another_window_changed_the_read_is_refused(store):
    mine = _started(store)
    mine.update_lesion("L1", comment="one")
    ReadSession.open(_second(store), mine.read.read_id).update_lesion("L1", comment="other")
    with pytest.raises(ReadConflict):
        mine.undo()
    assert load_read(store, mine.read.read_id).lesion("L1").comment == "other"


@pytest.mark.parametrize("path", ["add", "edit", "delete", "mark", "undo", "redo", "submit"])
def test_a_read_submitted_elsewhere_refuses_every_change(store, path):
    mine = _started(store)
    mine.update_lesion("L1", comment="x")
    if path == "redo":
        mine.undo()
    ReadSession.open(_second(store), mine.read.read_id).submit()
    before = audit.read_state(store.db, mine.read.read_id)
    actions = {
        "add": lambda: mine.add_lesion((0.0, 0.0, 0.0), SERIES, (0, 0, 0)),
        "edit": lambda: mine.update_lesion("L1", comment="late"),
        "delete": lambda: mine.delete_lesion("L1"),
        "mark": lambda: mine.mark_unit("spine.L5", "no_lesion"),
        "undo": mine.undo,
        "redo": mine.redo,
        "submit": mine.submit,
    }
    with pytest.raises(ReadLocked, match="submitted"):
        actions[path]()
    assert audit.read_state(store.db, mine.read.read_id) == before
    assert mine.read.status == "submitted"  # the window now shows the lock


def test_the_database_refuses_changes_to_a_submitted_read_from_any_connection(store, other_connection):
    session = _started(store)
    session.mark_unit("spine.L5", "no_lesion")
    session.submit()
    other = other_connection(store)
    read_id = session.read.read_id
    for sql in ("UPDATE reads SET status = 'draft' WHERE read_id = ?",
                "UPDATE reads SET reader = 'dr-x' WHERE read_id = ?",
                "DELETE FROM reads WHERE read_id = ?",
                "DELETE FROM lesions WHERE read_id = ?",
                "UPDATE lesions SET data = '{}' WHERE read_id = ?",
                "INSERT INTO lesions VALUES (?, 'L9', 9, '{}')",
                "UPDATE unit_marks SET mark = 'not_assessable' WHERE read_id = ?",
                "INSERT INTO unit_marks VALUES (?, 'spine.L4', 'no_lesion')"):
        with pytest.raises(integrity_error(store), match="submitted and locked"):
            other.execute(sql, (read_id,))


def test_read_import_replace_refuses_to_overwrite_a_submitted_read(sample_store, tmp_path, cli):
    import shutil

    shutil.copytree(sample_store.root, tmp_path / "store")
    store = Store.open(tmp_path / "store")
    session = ReadSession.open_or_create(store, store.studies()[0].study_uid, "dr-a")
    session.add_lesion((1.0, 2.0, 3.0), SERIES, (1, 2, 3), site_id="femur.distal", side="R")
    session.submit()
    document = export_document(store)
    document["reads"][0]["lesions"] = []
    document["reads"][0]["status"] = "draft"
    write_document(document, tmp_path / "reads.json")
    before = audit.read_state(store.db, session.read.read_id)
    code, _, err = cli("read", "import", tmp_path / "reads.json", "--replace", "--store", store.root)
    assert code == 1 and "submitted and locked" in err and "cannot be replaced" in err
    assert audit.read_state(store.db, session.read.read_id) == before
    assert len(load_read(store, session.read.read_id).lesions) == 1


def test_opening_a_case_twice_makes_one_read(store):
    first = ReadSession.open_or_create(store, STUDY, "dr-a")
    second = ReadSession.open_or_create(_second(store), STUDY, "dr-a")
    assert store.db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 0  # looking creates nothing
    first.add_lesion((1.0, 1.0, 1.0), SERIES, (1, 1, 1))
    with pytest.raises(ReadConflict):
        second.add_lesion((2.0, 2.0, 2.0), SERIES, (2, 2, 2))
    assert second.read.read_id == first.read.read_id  # the second window now holds the first one's read
    second.add_lesion((2.0, 2.0, 2.0), SERIES, (2, 2, 2))
    assert store.db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 1
    assert len(load_read(store, first.read.read_id).lesions) == 2


def _insert_audited(store, row: dict) -> None:
    """A read row written as a program would: with its audit entry in the same transaction."""
    with store.transaction() as db:
        db.execute(f"INSERT INTO reads ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        audit.append(db, row["reader"], "create", f"read:{row['read_id']}", state_before=None)


def test_the_schema_allows_one_first_version_and_one_successor(store):
    session = _started(store)
    session.submit()
    row = dict(store.db.execute("SELECT * FROM reads").fetchone())
    clash = {**row, "read_id": "other", "status": "draft"}
    with pytest.raises(integrity_error(store), match="reads_one_first_version"):
        _insert_audited(store, clash)
    successor = {**row, "read_id": "v2", "status": "draft", "version": 2, "supersedes": row["read_id"]}
    _insert_audited(store, successor)
    with pytest.raises(integrity_error(store), match="reads.supersedes|reads_one_successor"):
        _insert_audited(store, {**successor, "read_id": "v2b"})


def test_progress_tells_a_case_only_opened_from_one_not_started_and_keeps_its_time(sample_store, tmp_path):
    import shutil

    shutil.copytree(sample_store.root, tmp_path / "store")
    store = Store.open(tmp_path / "store")
    uid = store.studies()[0].study_uid
    rs.create(store, "trial")
    rs.add_cases(store, "trial", [uid])
    rs.add_readers(store, "trial", ["dr-a"])
    rs.assign(store, "trial")
    progress = rs.progress(store, "trial")[0]
    assert (progress["not started"], progress["opened"]) == (1, 0)
    session = ReadSession.open_or_create(store, uid, "dr-a", reading_study="trial")
    session.add_reading_time(20.0)  # only looking: no read, but the time is in the store
    assert store.db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 0
    progress = rs.progress(store, "trial")[0]
    assert (progress["not started"], progress["opened"], progress["draft"]) == (0, 1, 0)
    assert progress["active_seconds"] == pytest.approx(20.0)
    assert rs.worklist(store, "trial", "dr-a")[0]["status"] == "opened"
    again = ReadSession.open_or_create(Store.open(tmp_path / "store"), uid, "dr-a", reading_study="trial")
    again.add_reading_time(5.0)  # a later window on the same case adds to what was recorded
    again.add_lesion((1.0, 1.0, 1.0), SERIES, (1, 1, 1))
    progress = rs.progress(store, "trial")[0]
    assert (progress["not started"], progress["opened"], progress["draft"]) == (0, 0, 1)
    assert progress["active_seconds"] == pytest.approx(25.0)  # the looked-only time is counted once, with the read
    assert load_read(store, again.read.read_id).active_seconds == pytest.approx(25.0)


@pytest.mark.sqlite_only
def test_an_interactive_store_gives_up_on_a_lock_at_once_and_the_retry_works(store):
    interactive = Store.open(store.root, busy_timeout=INTERACTIVE_BUSY_TIMEOUT)
    assert interactive.db.execute("PRAGMA busy_timeout").fetchone()[0] == int(INTERACTIVE_BUSY_TIMEOUT * 1000)
    session = ReadSession.open_or_create(interactive, STUDY, "dr-a")
    other = sqlite3.connect(store.root / "store.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CnoError, match="could not be written .*locked.*nothing was changed"):
            session.add_lesion((1.0, 1.0, 1.0), SERIES, (1, 1, 1))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert session.add_lesion((1.0, 1.0, 1.0), SERIES, (1, 1, 1)) == "L1"

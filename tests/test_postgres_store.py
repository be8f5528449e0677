"""The shared store on a real PostgreSQL server: access by database role, the append-only audit, killed sessions.

One server for the session (conftest.pg_server); the reading study is built once into a template database
(conftest.trial_template, shared with the other server tests)
and each test works on its own copy. Readers' connections are tried with raw SQL: the server, not the
program, must refuse.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession, list_reads, load_read
from cno_annotate.errors import CnoError, ReadConflict, StoreWriteError
from cno_annotate.store import Store, audit
from cno_annotate.store.db import INTERACTIVE_BUSY_TIMEOUT
from cno_annotate.store.postgres import PgConnection
from tests.cli_run import run_cli
from tests.conftest import TRIAL_ADJUDICATOR as ADJUDICATOR


@pytest.fixture
def trial(trial_database):
    """``trial(login)`` -> a Store on this test's copy of the trial database (conftest), as that login (owner by
    default)."""
    opened: list[Store] = []

    def open_as(login: str = "cno_owner", **options) -> Store:
        opened.append(Store.open(trial_database(login), **options))
        return opened[-1]

    yield open_as
    for store in opened:
        store.close()


def _raw(store: Store) -> PgConnection:
    return PgConnection(store.url)


def _start_read(store: Store, reader: str, code: str = "CNO-0001") -> ReadSession:
    session = ReadSession.open_or_create(store, rs.study_uid_of(store, "trial", code), reader, reading_study="trial")
    lesion = session.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    session.set_grade(lesion, "marrow_hyperintensity", 2)
    return session


def test_a_reader_reads_through_the_program_and_the_server_records_who(trial):
    store = trial("dr-a")
    assert [e["reading_code"] for e in rs.worklist(store, "trial", "dr-a")]  # the worklist, by code
    session = _start_read(store, "dr-a")
    session.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], "1.2.3.4")
    session.submit()
    assert len(load_read(trial(), session.read.read_id).rois) == 1
    owner = trial()
    verification = audit.verify(owner.db)
    assert verification.ok, verification.reason
    mine = [e for e in audit.entries(owner.db, 100) if e["entity"] == f"read:{session.read.read_id}"]
    assert {e["actor"] for e in mine} == {"dr-a"}
    assert [e["action"] for e in mine][-1] == "submit"
    code, out = run_cli("audit", "verify", "--store", owner.root)
    assert code == 0 and "intact" in out


def test_a_readers_connection_cannot_select_identifiers_or_other_readers_rows(trial):
    other = _start_read(trial("dr-b"), "dr-b")
    mine = _start_read(trial("dr-a"), "dr-a", "CNO-0002")
    reader = _raw(trial("dr-a"))
    for sql in ("SELECT * FROM patients", "SELECT patient_name FROM patients", "SELECT birth_date FROM patients",
                "SELECT accession FROM studies", "SELECT institution FROM studies", "SELECT description FROM studies",
                "SELECT * FROM studies", "SELECT * FROM dicom_series", "SELECT path FROM images",
                "SELECT source_path FROM volumes", "SELECT description FROM volumes", "SELECT * FROM import_runs",
                "SELECT * FROM files", "SELECT * FROM audit_head", "SELECT * FROM audit_heads"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute(sql)
    assert {r[0] for r in reader.execute("SELECT reader FROM reads")} == {"dr-a"}
    assert {r[0] for r in reader.execute("SELECT read_id FROM lesions")} == {mine.read.read_id}
    other.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], "1.2.3.4")
    assert reader.execute("SELECT COUNT(*) FROM rois").fetchone()[0] == 0
    assert reader.execute("SELECT COUNT(*) FROM lesions WHERE read_id = ?", (other.read.read_id,)).fetchone()[0] == 0
    assert {r[0] for r in reader.execute("SELECT reader FROM rs_worklists")} == {"dr-a"}
    assert {r[0] for r in reader.execute("SELECT reader FROM rs_readers")} == {"dr-a"}
    entities = {r[0] for r in reader.execute("SELECT entity FROM audit")}
    assert entities == {f"read:{mine.read.read_id}"}  # not the other reader's entries, nor the study's
    assert reader.execute("UPDATE reads SET modified = 'x' WHERE reader = 'dr-b'").rowcount == 0
    assert reader.execute("DELETE FROM lesions WHERE read_id = ?", (other.read.read_id,)).rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        reader.execute("UPDATE reads SET reader = 'dr-b' WHERE reader = 'dr-a'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("SELECT cno_audit_append('dr-b', 'change', ?, '{}')", (f"read:{other.read.read_id}",))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash) "
                       "VALUES (999, 'x', 'dr-a', 'x', 'x', '{}', 'x', 'x')")
    reader.close()
    assert list_reads(trial("dr-a"), reading_study="trial")[0]["reader"] == "dr-a"
    with pytest.raises(CnoError, match="no read"):
        load_read(trial("dr-a"), other.read.read_id)


def test_an_adjudicator_sees_submitted_reads_of_their_cases_and_no_drafts(trial):
    submitted = _start_read(trial("dr-a"), "dr-a")
    submitted.submit()
    draft = _start_read(trial("dr-b"), "dr-b")
    adjudicator = _raw(trial(ADJUDICATOR))
    seen = {r[0] for r in adjudicator.execute("SELECT read_id FROM reads")}
    assert seen == {submitted.read.read_id}
    assert draft.read.read_id not in seen
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        adjudicator.execute("SELECT patient_id FROM patients")
    assert adjudicator.execute("UPDATE reads SET modified = 'x' WHERE read_id = ?",
                               (submitted.read.read_id,)).rowcount == 0  # sees it, may not change it
    adjudicator.close()


def test_a_reader_writes_only_their_own_reads_time_and_a_submitted_time_is_final(trial):
    """Migration 15 on the server: read_times follow the read's row security and lock (raw SQL as dr-a)."""
    mine = _start_read(trial("dr-a"), "dr-a")
    mine.add_reading_time(40)  # through the program, as the reader's login
    mine.add_reading_time(2.5)
    other = _start_read(trial("dr-b"), "dr-b", "CNO-0002")
    other.add_reading_time(10)
    assert load_read(trial(), mine.read.read_id).active_seconds == pytest.approx(42.5)
    reader = _raw(trial("dr-a"))
    assert {r[0] for r in reader.execute("SELECT read_id FROM read_times")} == {mine.read.read_id}
    assert reader.execute("UPDATE read_times SET active_seconds = 0 WHERE read_id = ?",
                          (other.read.read_id,)).rowcount == 0
    assert reader.execute("DELETE FROM read_times WHERE read_id = ?", (other.read.read_id,)).rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        reader.execute("UPDATE read_times SET read_id = ? WHERE read_id = ?", (other.read.read_id, mine.read.read_id))
    reader.execute("DELETE FROM read_times WHERE read_id = ?", (other.read.read_id,))
    assert load_read(trial(), other.read.read_id).active_seconds == pytest.approx(10)
    mine.submit()
    with pytest.raises(psycopg.errors.IntegrityError, match="locked"):
        reader.execute("UPDATE read_times SET active_seconds = 0 WHERE read_id = ?", (mine.read.read_id,))
    reader.close()
    assert load_read(trial(), mine.read.read_id).active_seconds == pytest.approx(42.5)


def test_the_audit_trail_is_append_only_even_for_the_owner(trial):
    _start_read(trial("dr-a"), "dr-a")
    owner = _raw(trial())
    for sql in ("UPDATE audit SET actor = 'dr-b' WHERE seq = 2", "DELETE FROM audit WHERE seq = 2",
                "DELETE FROM audit", "TRUNCATE audit", "UPDATE audit_head SET seq = 1", "DELETE FROM audit_head",
                "UPDATE audit_heads SET seq = 1", "DELETE FROM audit_heads", "TRUNCATE audit_heads",
                "INSERT INTO audit_heads VALUES ('read:x', 1, 'x')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            owner.execute(sql)
    owner.close()
    assert audit.verify(trial().db).ok


def test_a_change_to_a_read_without_its_audit_entry_is_refused_at_commit(trial):
    session = _start_read(trial("dr-a"), "dr-a")
    owner = _raw(trial())
    with pytest.raises(psycopg.errors.IntegrityError, match="without an audit entry"):
        owner.execute("UPDATE lesions SET data = '{}' WHERE read_id = ?", (session.read.read_id,))
    with pytest.raises(psycopg.errors.IntegrityError, match="without an audit entry"):
        owner.execute("UPDATE reads SET revision = 99 WHERE read_id = ?", (session.read.read_id,))
    owner.close()
    assert load_read(trial(), session.read.read_id).revision == session.read.revision


def test_follow_up_outcomes_follow_the_reads_row_security_and_audit_check(trial):
    store = trial("dr-a")
    first, second = (rs.study_uid_of(store, "trial", code) for code in ("CNO-0001", "CNO-0002"))
    prior = ReadSession.open_or_create(store, first, "dr-a")
    prior.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    prior.submit()
    session = ReadSession.open_or_create(store, second, "dr-a")
    session.follow_up(prior.read.read_id)
    session.set_outcome(prior.read.lesions[0].tracking_uid, "not_assessable")
    mine, other = _raw(store), _raw(trial("dr-b"))
    assert mine.execute("SELECT COUNT(*) FROM followup_outcomes").fetchone()[0] == 1
    assert other.execute("SELECT COUNT(*) FROM followup_outcomes").fetchone()[0] == 0
    assert other.execute("DELETE FROM followup_outcomes").rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        other.execute("INSERT INTO followup_outcomes VALUES (?, '1.2.3', 'resolved')", (session.read.read_id,))
    with pytest.raises(psycopg.errors.IntegrityError, match="without an audit entry"):
        mine.execute("UPDATE followup_outcomes SET status = 'resolved' WHERE read_id = ?", (session.read.read_id,))
    mine.close()
    other.close()
    assert load_read(store, session.read.read_id).followup.outcomes == {prior.read.lesions[0].tracking_uid:
                                                                        "not_assessable"}
    assert audit.verify(trial().db).ok


def test_the_server_chains_entries_exactly_as_the_program_checks_them(trial):
    store = trial()
    awkward = ["quote \" backslash \\ slash /", "tab\tnewline\nreturn\r", "\x00\x01\x1f\x7f", "é ß 漢字 🦴",
               "\u2028\u2029", "{\"json\": [1, 2]}", ""]
    with store.transaction() as db:
        for n, text in enumerate(awkward):
            plain = text.replace("\x00", "")  # a text column holds no NUL (the JSON detail escapes it)
            audit.append(db, f"coordinator {plain}", f"note {n}", f"note:{plain}", before=text, after={text: [text]})
    verification = audit.verify(store.db)
    assert verification.ok, verification.reason


def test_a_conflicting_edit_is_refused_and_reloaded_and_nothing_is_lost(trial):
    first = _start_read(trial("dr-a"), "dr-a")
    second = ReadSession.open(trial("dr-a"), first.read.read_id, "dr-a")
    lesion = first.read.lesions[0].lesion_id
    first.update_lesion(lesion, comment="first")
    with pytest.raises(ReadConflict, match="changed in another window"):
        second.update_lesion(lesion, comment="second")
    assert second.read.lesions[0].comment == "first"  # reloaded: the first edit is there
    second.update_lesion(lesion, comment="second, after reload")
    assert load_read(trial(), first.read.read_id).lesions[0].comment == "second, after reload"
    assert audit.verify(trial().db).ok


def _wait_for_lock(watcher: PgConnection, pid: int) -> None:
    for _ in range(400):
        row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = ?", (pid,)).fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.025)
    raise AssertionError("the edit never waited on the lock")


def test_a_session_killed_mid_edit_applies_the_edit_once_or_refuses_it_never_twice(trial):
    store = trial("dr-a")
    session = _start_read(store, "dr-a")
    lesion = session.read.lesions[0].lesion_id
    revision = session.read.revision
    owner = _raw(trial())
    owner.execute("BEGIN")
    owner.execute("SELECT seq FROM audit_heads WHERE entity = ? FOR UPDATE",  # the edit will wait to append its entry
                  (f"read:{session.read.read_id}",))
    outcome: list[BaseException | None] = []

    def edit() -> None:
        try:
            session.update_lesion(lesion, comment="killed mid-edit")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    editor = threading.Thread(target=edit)
    editor.start()
    _wait_for_lock(owner, store.pg.backend_pid)
    owner.execute("SELECT pg_terminate_backend(?)", (store.pg.backend_pid,))
    editor.join(30)
    owner.execute("ROLLBACK")
    assert len(outcome) == 1 and isinstance(outcome[0], StoreWriteError)
    assert "nothing was changed" in str(outcome[0])
    stored = load_read(trial(), session.read.read_id)
    assert stored.revision == revision and stored.lesions[0].comment == ""  # refused whole
    session.update_lesion(lesion, comment="killed mid-edit")  # the same session tries again, on a new connection
    stored = load_read(trial(), session.read.read_id)
    assert stored.revision == revision + 1 and stored.lesions[0].comment == "killed mid-edit"
    edits = [e for e in audit.entries(trial().db, 100) if e["action"] == "edit comment"]
    assert len(edits) == 1  # applied once
    assert audit.verify(trial().db).ok
    owner.close()


def test_an_edit_waiting_on_another_programs_lock_is_refused_with_a_message(trial):
    store = trial("dr-a", busy_timeout=INTERACTIVE_BUSY_TIMEOUT)
    session = _start_read(store, "dr-a")
    before = session.read.revision
    owner = _raw(trial())
    owner.execute("BEGIN")
    owner.execute("SELECT 1 FROM reads WHERE read_id = ? FOR UPDATE", (session.read.read_id,))
    try:
        with pytest.raises(StoreWriteError, match="could not be written .*nothing was changed"):
            session.update_lesion(session.read.lesions[0].lesion_id, comment="blocked")
    finally:
        owner.execute("ROLLBACK")
        owner.close()
    assert session.read.revision == before
    session.update_lesion(session.read.lesions[0].lesion_id, comment="after")
    assert load_read(trial(), session.read.read_id).lesions[0].comment == "after"


def test_the_store_is_named_by_the_environment_and_grant_needs_a_server(trial, tmp_path, monkeypatch):
    owner = trial()
    monkeypatch.setenv("CNO_ANNOTATE_STORE", owner.root)
    code, out = run_cli("reading-study", "list")
    assert code == 0 and "trial" in out
    code, out = run_cli("studies", "--store", trial("dr-a").root)  # a reader asks for the identifying list
    assert code == 1 and "permission denied" in out and "access rules" in out and "Traceback" not in out
    code, out = run_cli("store", "grant", "--reader", "dr-z", "--store", tmp_path / "nothing")
    assert code == 1 and "no store" in out
    Store.open(tmp_path / "local").close()
    code, out = run_cli("store", "grant", "--reader", "dr-z", "--store", tmp_path / "local")
    assert code == 1 and "needs a PostgreSQL store" in out


def test_a_server_store_of_schema_12_is_upgraded_with_tracking_uids_carried_across_versions(pg_server):
    from cno_annotate.store.db import MIGRATIONS, _run_pg_step
    from cno_annotate.store.postgres import migrate

    url = pg_server.create_database("schema_12")
    old = PgConnection(url)
    migrate(old, MIGRATIONS[:12], _run_pg_step)
    columns = "read_id, study_uid, reader, scheme_id, scheme_version, taxonomy, status, started, modified, " \
              "revision, next_lesion, version, supersedes"
    for read_id, status, version, supersedes in (("r1", "submitted", 1, None), ("r2", "draft", 2, "r1")):
        with old.transaction():
            old.execute(f"INSERT INTO reads ({columns}) VALUES (?, '1.2.3', 'dr-a', 'rai-cromris', '2.0.0', "
                        f"'wbmri-sites', 'draft', 'x', 'x', 1, 2, ?, ?)", (read_id, version, supersedes))
            old.execute("INSERT INTO lesions VALUES (?, 'L1', 1, ?)", (read_id, '{"lesion_id": "L1"}'))
            old.execute("UPDATE reads SET status = ? WHERE read_id = ?", (status, read_id))
            audit.append(old, "coordinator", "create", f"read:{read_id}", state_before=None)
    old.close()
    store = Store.open(url)
    uids = dict(store.db.execute("SELECT read_id, data::json ->> 'tracking_uid' FROM lesions").fetchall())
    assert uids["r1"] and uids["r1"] == uids["r2"]  # the later version keeps the lesion's UID
    migrated = store.db.execute("SELECT entity FROM audit WHERE action = 'migrate' ORDER BY seq").fetchall()
    assert [m[0] for m in migrated] == ["read:r1", "read:r2"]
    assert audit.verify(store.db).ok
    with pytest.raises(psycopg.errors.IntegrityError, match="submitted and locked"):
        store.db.execute("UPDATE lesions SET data = '{}' WHERE read_id = 'r1'")  # the lock is back
    store.close()


@pytest.mark.parametrize("action, detail", [("edit comment", '{"state": "forged", "state_before": null}'),
                                            ("edit comment", "{}"), ("delete", '{"state": null}')])
def test_a_reader_cannot_forge_audit_entries_about_their_own_or_unknown_reads(trial, action, detail):
    mine = _start_read(trial("dr-a"), "dr-a")
    reader = _raw(trial("dr-a"))
    for entity in (f"read:{mine.read.read_id}", "read:no-such-read"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("SELECT cno_audit_append('dr-a', ?, ?, ?)", (action, entity, detail))
    reader.close()
    owner = trial()
    verification = audit.verify(owner.db)
    assert verification.ok, verification.reason
    mine.add_lesion((-60.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="L")  # not locked out
    assert len(load_read(owner, mine.read.read_id).lesions) == 2


@pytest.mark.parametrize("design, sees_patient, sees_timepoint", [
    ("unpaired-blinded", False, False), ("paired-hidden-order", True, False), ("paired-chronological", True, True)])
def test_a_reader_sees_patient_and_timepoint_of_cases_only_as_the_design_allows(trial, design, sees_patient,
                                                                                  sees_timepoint):
    rs.set_design(trial(), "trial", design)
    reader = _raw(trial("dr-a"))
    for sql in ("SELECT * FROM rs_cases", "SELECT patient_code FROM rs_cases", "SELECT timepoint FROM rs_cases"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute(sql)
    seen = reader.execute("SELECT patient_code, timepoint FROM rs_cases_seen").fetchall()
    reader.close()
    assert len(seen) == len(rs.cases(trial(), "trial"))
    assert all((row[0] is not None) == sees_patient and (row[1] is not None) == sees_timepoint for row in seen)
    store = trial("dr-a")
    entries = rs.worklist(store, "trial", "dr-a")  # the program's reader paths still work
    assert [e.get("patient_code") is not None for e in entries] == [sees_patient] * len(seen)
    assert rs.comparison_cases(store, "trial", entries[0]["reading_code"]) == []  # each patient one visit
    assert rs.study_uid_of(store, "trial", entries[0]["reading_code"])

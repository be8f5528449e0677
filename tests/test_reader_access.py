"""What a reader's PostgreSQL login can reach and do, tried with raw SQL on the reader's own connection.

The server, not the program, must refuse: a reader sees their reads and the stand-in UIDs of the study
PACS, never a source (identifying) UID; appends only the audit entries the program writes for them; and
each refusal the command line meets is one line that says what happened and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession, list_reads, load_read
from cno_annotate.store import Store, audit
from cno_annotate.store.postgres import PgConnection
from cno_annotate.store.reading_studies import age_years
from tests import test_postgres_store
from tests.cli_run import run_cli
from tests.conftest import TRIAL_ADJUDICATOR, TRIAL_READERS
from tests.test_postgres_store import _raw, _start_read

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
READERS, ADJUDICATOR = TRIAL_READERS, TRIAL_ADJUDICATOR
trial = test_postgres_store.trial  # the fixture: a Store on this test's copy of the trial database, as a login


# -- one-line messages ---------------------------------------------------------------------------------------------
def test_audit_verify_run_as_a_reader_says_it_is_the_coordinators_check(trial):
    _start_read(trial("dr-a"), "dr-a")
    code, out = run_cli("audit", "verify", "--store", trial("dr-a").root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "coordinator" in out and "dr-a" in out and "Traceback" not in out
    assert "broken" not in out and "do not match" not in out  # nothing is wrong with the trail
    code, out = run_cli("store", "check", "--store", trial("dr-a").root)
    assert code == 1 and "coordinator" in out and "permission denied" not in out, out


def test_a_worklist_asked_for_another_reader_says_whose_it_is(trial):
    code, out = run_cli("reading-study", "worklist", "trial", "--reader", "dr-b", "--store", trial("dr-a").root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "dr-a" in out and "dr-b" in out and "own worklist" in out and "Traceback" not in out
    assert "assign" not in out  # the worklist exists: assigning again is not the remedy
    code, out = run_cli("reading-study", "worklist", "trial", "--reader", "dr-a", "--store", trial("dr-a").root)
    assert code == 0 and "CNO-" in out


def test_store_grant_for_someone_in_no_reading_study_says_so_and_what_to_do(trial):
    code, out = run_cli("store", "grant", "--reader", "dr-nobody", "--store", trial().root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "dr-nobody" in out and "add-readers" in out and "Traceback" not in out
    owner = _raw(trial())
    try:
        assert owner.execute("SELECT 1 FROM pg_roles WHERE rolname = 'dr-nobody'").fetchone() is None
    finally:
        owner.close()


def test_importing_another_readers_document_says_whose_it_is_in_one_line(trial, tmp_path):
    _start_read(trial("dr-b"), "dr-b").submit()
    code, out = run_cli("read", "export", "--reader", "dr-b", "--store", trial().root, "--out", tmp_path / "b.json")
    assert code == 0, out
    code, out = run_cli("read", "import", tmp_path / "b.json", "--store", trial("dr-a").root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "dr-b" in out and "dr-a" in out and "nothing was imported" in out, out
    assert "permission denied" not in out and "Traceback" not in out and "2.25." not in out, out
    document = json.loads((tmp_path / "b.json").read_text())
    assert not [uid for uid in (document["reads"][0]["study_uid"], document["reads"][0]["read_id"]) if uid in out]
    owner = trial()
    assert [r["reader"] for r in owner.db.execute("SELECT reader FROM reads").fetchall()] == ["dr-b"]


# -- the audit entries a reader may append -------------------------------------------------------------------------
def _true_entry(reader: PgConnection, read_id: str) -> str:
    """An entry's detail that records the read's true state (all the database checked before migration 24)."""
    state, before = reader.execute("SELECT cno_read_state(?), cno_audited_state(?)",
                                   (read_id, f"read:{read_id}")).fetchone()
    return json.dumps({"state": state, "state_before": before})


@pytest.mark.parametrize("action", ["adjudicate", "approve by coordinator", "unblind", "edit patient_name",
                                    "submit", "create", "delete", "import", "export"])
def test_a_reader_appends_only_the_actions_the_program_writes_for_them(trial, action):
    mine = _start_read(trial("dr-a"), "dr-a")  # a draft: 'submit' would say it is submitted; 'create' happened
    reader = _raw(trial("dr-a"))
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot write"):
            reader.execute("SELECT cno_audit_append('dr-a', ?, ?, ?)",
                           (action, f"read:{mine.read.read_id}", _true_entry(reader, mine.read.read_id)))
        assert reader.execute("SELECT cno_audit_append('dr-a', 'edit comment', ?, ?)",  # a name the program writes
                              (f"read:{mine.read.read_id}", _true_entry(reader, mine.read.read_id))).fetchone()[0]
    finally:
        reader.close()
    verification = audit.verify(trial().db)
    assert verification.ok, verification.reason


def test_every_change_the_program_makes_for_a_reader_is_still_audited_under_their_login(trial):
    store = trial("dr-a")
    first, second = (rs.study_uid_of(store, "trial", code) for code in ("CNO-0001", "CNO-0002"))
    prior = ReadSession.open_or_create(store, first, "dr-a", reading_study="trial")
    kept = prior.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    gone = prior.add_lesion((70.0, 0.0, -400.0), "1.2.3.4", (5, 2, 3), site_id="femur.distal", side="L")
    prior.update_lesion(kept, comment="knee", confidence=4)
    prior.set_grade(kept, "marrow_hyperintensity", 2)
    prior.set_unit_grade("femur.distal:R", "signal_extension", 2)
    prior.delete_lesion(gone)
    prior.undo()
    prior.redo()
    prior.mark_unit("spine.L5", "no_lesion")
    roi = prior.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], "1.2.3.4")
    prior.set_roi_role(roi, "muscle")
    other = prior.add_roi("rectangle", "axial", [(6, 6, 2), (9, 9, 2)], "1.2.3.4")
    prior.delete_roi(other)
    prior.mark_remaining()
    prior.submit()
    later = ReadSession.new_version(store, prior.read.read_id, "dr-a", "second look")
    later.submit()
    earlier = ReadSession.open_or_create(store, first, "dr-a")  # follow-up reads outside the blinded study
    earlier.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    earlier.submit()
    follow = ReadSession.open_or_create(store, second, "dr-a")
    follow.follow_up(earlier.read.read_id)  # no change yet: the link goes with the first outcome (one statement)
    tracking = earlier.read.lesions[0].tracking_uid
    for status in ("resolved", "not_assessable", None):
        follow.set_outcome(tracking, status)
    third = ReadSession.open_or_create(store, rs.study_uid_of(store, "trial", "CNO-0003"), "dr-a")
    third.mark_unit("spine.L5", "no_lesion")
    third.follow_up(earlier.read.read_id)  # a read that exists: the link is a change of its own
    owner = trial()
    assert load_read(owner, follow.read.read_id).followup.prior_read_id == earlier.read.read_id
    assert load_read(owner, third.read.read_id).followup.prior_read_id == earlier.read.read_id
    actions = {e["action"] for e in audit.entries(owner.db, 500) if e["actor"] == "dr-a"}
    assert {"create", "add lesion", "edit comment, confidence", "edit grades", "grade femur.distal:R signal_extension",
            "delete lesion", "undo delete lesion", "redo delete lesion", "mark spine.L5", "draw ROI",
            f"ROI {roi} muscle", "delete ROI", "submit", "new-version", "follow-up", "resolved prior lesion",
            "not assessable prior lesion", "unconfirm prior lesion"} <= actions, actions
    assert any(a.startswith("mark ") and a.endswith(" remaining units no_lesion") for a in actions)
    verification = audit.verify(owner.db)
    assert verification.ok, verification.reason


# -- a reader's exports ---------------------------------------------------------------------------------------------
def test_a_reader_exports_their_own_reads_audited_under_their_login(trial, tmp_path):
    mine = _start_read(trial("dr-a"), "dr-a")
    _start_read(trial("dr-b"), "dr-b", "CNO-0002")
    url = trial("dr-a").root
    code, out = run_cli("read", "export", "--store", url, "--out", tmp_path / "mine.json")
    assert code == 0, out
    document = json.loads((tmp_path / "mine.json").read_text())
    assert [r["read_id"] for r in document["reads"]] == [mine.read.read_id]
    code, out = run_cli("export-csv", "--store", url, "--out", tmp_path / "csv", "--reading-study", "trial")
    assert code == 0, out
    assert mine.read.read_id in (tmp_path / "csv" / "reads.csv").read_text()
    code, out = run_cli("read", "export", "--reader", "dr-b", "--store", url, "--out", tmp_path / "theirs.json")
    assert code == 1 and len(out.strip().splitlines()) == 1 and "own reads" in out, out
    assert not (tmp_path / "theirs.json").exists()
    owner = trial()
    exports = [e for e in audit.entries(owner.db, 100) if e["action"] in ("export", "export-csv")]
    assert [(e["actor"], e["action"]) for e in exports] == [("dr-a", "export"), ("dr-a", "export-csv")]
    assert all(e["detail"]["after"]["reads"] == [mine.read.read_id] for e in exports)
    verification = audit.verify(owner.db)
    assert verification.ok, verification.reason


def test_a_readers_blinded_export_works_under_their_login_and_is_audited(trial, tmp_path):
    """reading-study export (the reader's blinded record) on the server, as the reader's own login."""
    mine = _start_read(trial("dr-a"), "dr-a")
    code, out = run_cli("reading-study", "export", "trial", "--reader", "dr-a", "--store", trial("dr-a").root,
                        "--out", tmp_path / "mine.json")
    assert code == 0, out  # was: "permission denied for table reading_studies"
    document = json.loads((tmp_path / "mine.json").read_text())
    assert [r["study_uid"] for r in document["reads"]] == ["CNO-0001"]
    owner = trial()
    (entry,) = [e for e in audit.entries(owner.db, 100) if e["action"] == "export"]
    assert entry["actor"] == "dr-a" and entry["detail"]["after"]["reads"] == [mine.read.read_id]
    verification = audit.verify(owner.db)
    assert verification.ok, verification.reason


def test_a_new_version_of_another_readers_read_says_whose_reads_the_login_opens(trial):
    _start_read(trial("dr-b"), "dr-b").submit()
    code, out = run_cli("reading-study", "new-version", "trial", "--reader", "dr-b", "--code", "CNO-0001",
                        "--reason", "typo", "--store", trial("dr-a").root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "own reads" in out and "dr-a" in out and "has no read" not in out  # dr-b has one: it is not dr-a's


def test_a_reader_cannot_append_an_export_entry_about_reads_not_theirs(trial):
    _start_read(trial("dr-a"), "dr-a")
    theirs = _start_read(trial("dr-b"), "dr-b", "CNO-0002")
    reader = _raw(trial("dr-a"))
    try:
        for actor, action, reads in (("dr-a", "export", [theirs.read.read_id]), ("dr-a", "publish", []),
                                     ("coordinator", "export", [])):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot write"):
                reader.execute("SELECT cno_audit_append(?, ?, 'reads', ?)",
                               (actor, action, json.dumps({"after": {"reader": "dr-a", "reads": reads}})))
    finally:
        reader.close()


# -- other logins' activity ------------------------------------------------------------------------------------------
def _listening(url: str) -> psycopg.Connection:
    """A raw session that listens where any login could before migration 25: the shared channel."""
    connection = psycopg.connect(url, autocommit=True)
    connection.execute("LISTEN cno_reading")
    return connection


def _heard(listener, wanted) -> bool:
    """Whether the listener hears an event satisfying ``wanted`` within a few waits."""
    for _ in range(5):
        if any(wanted(e) for e in listener.wait(20)):
            return True
    return False


def test_a_reader_hears_no_notification_about_another_readers_read(trial):
    from cno_annotate.store.live import ProgressListener

    eavesdropper = _listening(trial("dr-b").url)
    own = ProgressListener(trial("dr-b").url)
    adjudicator = ProgressListener(trial(ADJUDICATOR).url)
    coordinator = ProgressListener(trial().url)
    try:
        session = _start_read(trial("dr-a"), "dr-a")
        session.submit()
        submitted = lambda e: getattr(e, "reader", None) == "dr-a" and getattr(e, "status", None) == "submitted"  # noqa: E731
        assert _heard(coordinator, submitted) and _heard(adjudicator, submitted)
        assert list(eavesdropper.notifies(timeout=1)) == []  # no read id, no sender's PID on a shared channel
        assert list(own._connection.notifies(timeout=1)) == []  # dr-b is not woken by dr-a's work at all
    finally:
        eavesdropper.close()
        for listener in (own, adjudicator, coordinator):
            listener.close()


def test_a_readers_notifications_come_only_from_their_own_sessions_or_a_coordinators(trial):
    """What a reader may see of other sessions through live progress (docs/deployment.md): a notification carries
    the sending session's process id, so a reader must hear nothing sent by another reader's session."""
    from cno_annotate.store.live import ProgressListener

    listener = ProgressListener(trial("dr-a").url)
    reader, other, coordinator = trial("dr-a"), trial("dr-b"), trial()
    try:
        _start_read(reader, "dr-a").submit()
        _start_read(other, "dr-b", "CNO-0002").submit()
        rs.assign(coordinator, "trial", seed=3)  # the worklists change: sent from the coordinator's session
        heard = [n for _ in range(5) for n in listener._connection.notifies(timeout=0.5)]
    finally:
        listener.close()
    assert heard and {n.pid for n in heard} <= {reader.pg.backend_pid, coordinator.pg.backend_pid}
    assert other.pg.backend_pid not in {n.pid for n in heard}
    docs = " ".join((Path(__file__).parents[1] / "docs" / "deployment.md").read_text(encoding="utf-8").split())
    assert "reader ids that are codes" in docs and "regrole" in docs  # the guide says why names must be codes


def test_the_deployment_step_hides_other_logins_sessions_from_a_reader(trial, pg_server):
    from cno_annotate.store import postgres

    database = trial().url.rsplit("/", 1)[1]
    superuser = psycopg.connect(pg_server.url(database), autocommit=True)  # the tests' owner is the superuser
    try:
        superuser.execute(postgres.HIDE_ACTIVITY)
    finally:
        superuser.close()
    other = _raw(trial("dr-a"))  # dr-a is connected
    reader = _raw(trial("dr-b"))
    try:
        for sql in ("SELECT usename, pid FROM pg_stat_activity", "SELECT pid FROM pg_locks",
                    "SELECT pg_stat_get_backend_userid(s) FROM pg_stat_get_backend_idset() s",
                    "SELECT pg_stat_get_backend_userid(1)", "SELECT pg_stat_get_backend_pid(1)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(sql)
        coordinator = _raw(trial())
        try:
            logins = {r[0] for r in coordinator.execute("SELECT usename FROM pg_stat_activity")}
            assert {"dr-a", "dr-b"} <= logins  # the coordinator still sees who is connected
        finally:
            coordinator.close()
        assert rs.worklist(trial("dr-b"), "trial", "dr-b")  # the reader's program still works
    finally:
        reader.close()
        other.close()
    docs = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert " ".join(postgres.HIDE_ACTIVITY.split()) in " ".join(docs.split())  # the guide gives this very step


# -- source UIDs -----------------------------------------------------------------------------------------------------
#: The UID columns a reader's login may still select, and why: each holds a stand-in or the program's own UID, never a
#: source UID (test_nothing_a_readers_or_adjudicators_login_can_select_holds_a_source_identifier scans every value).
#: reads.study_uid, rs_cases_seen.study_uid and rs_opened.study_uid are a case's key (the stand-in study UID the
#: study PACS holds it under, migration 30); rs_published gives that same stand-in; a lesion's tracking UID is the
#: program's own. rs_cases_seen.case_key holds the key too (case_key has no 'uid' in its name).
READER_UID_COLUMNS = {("reads", "study_uid"), ("rs_cases_seen", "study_uid"), ("rs_published", "pacs_study_uid"),
                      ("followup_outcomes", "tracking_uid"), ("rs_opened", "study_uid")}


def test_a_readers_login_selects_no_series_or_study_uid_of_the_imaging_tables(trial):
    reader = _raw(trial("dr-a"))
    try:
        for sql in ("SELECT study_uid FROM studies", "SELECT series_uid FROM volumes", "SELECT volume_id FROM volumes",
                    "SELECT study_uid FROM volumes", "SELECT COUNT(*) FROM volumes", "SELECT COUNT(*) FROM studies"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(sql)
    finally:
        reader.close()
    owner = _raw(trial())
    try:
        for login in ("dr-a", ADJUDICATOR):
            selectable = {(r[0], r[1]) for r in owner.execute(
                "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_attribute a ON a.attrelid = c.oid WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') "
                "AND a.attnum > 0 AND NOT a.attisdropped AND (a.attname LIKE '%uid%' OR a.attname LIKE '%volume%' "
                "OR a.attname LIKE '%series%') AND has_column_privilege(?, c.oid, a.attnum, 'SELECT')", (login,))}
            assert selectable == READER_UID_COLUMNS, (login, selectable)
    finally:
        owner.close()

# -- a case only opened (looked at) by a reader --------------------------------------------------------------------
def test_a_reader_records_opening_only_their_own_worklist_cases(trial):
    reader = trial("dr-a")
    uid = rs.study_uid_of(reader, "trial", "CNO-0001")
    session = ReadSession.open_or_create(reader, uid, "dr-a", reading_study="trial")
    session.add_reading_time(15.0)
    coordinator = trial()
    progress = {p["reader"]: p for p in rs.progress(coordinator, "trial")}
    assert (progress["dr-a"]["opened"], progress["dr-a"]["draft"]) == (1, 0)
    assert progress["dr-a"]["active_seconds"] == pytest.approx(15.0)
    assert progress["dr-b"]["opened"] == 0
    assert coordinator.db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 0
    session.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    progress = {p["reader"]: p for p in rs.progress(coordinator, "trial")}
    assert (progress["dr-a"]["opened"], progress["dr-a"]["draft"]) == (0, 1)
    assert progress["dr-a"]["active_seconds"] == pytest.approx(15.0)  # counted once
    raw = _raw(reader)
    try:
        for who, study in (("dr-b", uid), ("dr-a", "1.2.3.999")):  # another reader's row; a case not on the worklist
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                raw.execute("INSERT INTO rs_opened (reading_study, reader, study_uid, opened, looked_seconds) "
                            "VALUES ('trial', ?, ?, 'now', 0)", (who, study))
    finally:
        raw.close()


# -- one change of a read, run as the store's owner (cno_change_read, migration 29) --------------------------------
_NO_DETAIL = json.dumps({"after": None, "before": None})


def _change(connection: PgConnection, read_id: str, revision: int, actor: str, action: str = "edit comment",
            row: dict | None = None, create: dict | None = None) -> dict:
    """cno_change_read as the program calls it, with raw SQL on the caller's own connection."""
    return connection.execute(
        "SELECT cno_change_read(?::text, ?::bigint, NULL, 'now', ?::text, ?::text, '{}'::jsonb, ?::text, ?::jsonb, "
        "?::jsonb)", (read_id, revision, actor, action, _NO_DETAIL, json.dumps(row or {}),
                      None if create is None else json.dumps(create))).fetchone()[0]


def _unchanged(trial, read_id: str, revision: int, entries: int) -> bool:
    """Whether the read is still at ``revision`` and the trail holds ``entries`` entries."""
    owner = _raw(trial())
    try:
        now = owner.execute("SELECT revision FROM reads WHERE read_id = ?", (read_id,)).fetchone()[0]
        return now == revision and owner.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == entries
    finally:
        owner.close()


def _entries(trial) -> int:
    owner = _raw(trial())
    try:
        return owner.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    finally:
        owner.close()


def test_a_reader_changes_no_other_readers_read_through_the_owners_change_function(trial):
    theirs = _start_read(trial("dr-b"), "dr-b")
    read_id, revision, entries = theirs.read.read_id, theirs.read.revision, _entries(trial)
    reader = _raw(trial("dr-a"))
    try:
        assert _change(reader, read_id, revision, "dr-a") == {"refused": None}  # as if there were no such read
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot write audit entries as dr-b"):
            _change(reader, read_id, revision, "dr-b")
        row = {**_read_row(trial, read_id), "read_id": "made-for-dr-b", "reader": "dr-b"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot make a read of dr-b"):
            _change(reader, "made-for-dr-b", row["revision"], "dr-a", "add lesion",
                    create={"row": row, "detail": _NO_DETAIL, "seconds": 0})
    finally:
        reader.close()
    assert _unchanged(trial, read_id, revision, entries)
    verification = audit.verify(trial().db)
    assert verification.ok, verification.reason


def _read_row(trial, read_id: str) -> dict:
    owner = _raw(trial())
    try:
        return owner.execute("SELECT row_to_json(r) FROM reads r WHERE read_id = ?", (read_id,)).fetchone()[0]
    finally:
        owner.close()


def test_a_reader_changes_their_submitted_read_through_the_owners_function_never(trial):
    mine = _start_read(trial("dr-a"), "dr-a")
    mine.submit()
    read_id, revision, entries = mine.read.read_id, mine.read.revision, _entries(trial)
    reader = _raw(trial("dr-a"))
    try:
        assert _change(reader, read_id, revision, "dr-a")["refused"] == {"status": "submitted", "revision": revision}
        assert _change(reader, read_id, revision, "dr-a", "submit", row={"status": "submitted"})["refused"]
    finally:
        reader.close()
    assert _unchanged(trial, read_id, revision, entries)


@pytest.mark.parametrize("action", ["adjudicate", "submit", "create", "new-version", "follow-up", "import"])
def test_the_owners_change_function_writes_only_the_entries_the_program_writes_for_a_reader(trial, action):
    mine = _start_read(trial("dr-a"), "dr-a")  # a draft, already created, following no read
    read_id, revision, entries = mine.read.read_id, mine.read.revision, _entries(trial)
    reader = _raw(trial("dr-a"))
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="the program writes no such entry"):
            _change(reader, read_id, revision, "dr-a", action)
        assert _unchanged(trial, read_id, revision, entries)
        assert "refused" not in _change(reader, read_id, revision, "dr-a", "edit comment")  # one the program writes
    finally:
        reader.close()
    verification = audit.verify(trial().db)
    assert verification.ok, verification.reason


def test_an_adjudicator_changes_no_read_of_their_cases_through_the_owners_change_function(trial):
    submitted = _start_read(trial("dr-a"), "dr-a")
    submitted.submit()
    draft = _start_read(trial("dr-b"), "dr-b")
    entries = _entries(trial)
    adjudicator = _raw(trial(ADJUDICATOR))
    try:
        for session in (submitted, draft):
            assert _change(adjudicator, session.read.read_id, session.read.revision, ADJUDICATOR) == {"refused": None}
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot write audit entries as"):
                _change(adjudicator, session.read.read_id, session.read.revision, session.read.reader)
    finally:
        adjudicator.close()
    for session in (submitted, draft):
        assert _unchanged(trial, session.read.read_id, session.read.revision, entries)


def test_a_login_in_no_group_cannot_run_the_owners_change_function(trial, pg_server):
    mine = _start_read(trial("dr-a"), "dr-a")
    entries = _entries(trial)
    owner = _raw(trial())
    try:
        owner.execute("DROP ROLE IF EXISTS \"dr-stranger\"")
        owner.execute("CREATE ROLE \"dr-stranger\" LOGIN PASSWORD 'stranger'")  # CONNECT: every login may
    finally:
        owner.close()
    database = trial().url.rsplit("/", 1)[1]
    stranger = psycopg.connect(pg_server.url(database, "dr-stranger", "stranger"), autocommit=True)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # in no group it would count as a coordinator
            stranger.execute("SELECT cno_change_read(%s, %s, NULL, 'now', 'dr-a', 'edit comment', '{}', %s, '{}', "
                             "NULL)", (mine.read.read_id, mine.read.revision, _NO_DETAIL))
    finally:
        stranger.close()
        owner = _raw(trial())
        owner.execute("DROP ROLE \"dr-stranger\"")
        owner.close()
    assert _unchanged(trial, mine.read.read_id, mine.read.revision, entries)


# -- temporary tables named like the store's (a login's own pg_temp schema) ------------------------------------------
def test_a_readers_temporary_tables_do_not_stand_in_for_the_stores_inside_its_functions(trial):
    """A temporary table is searched before the schema unless the function's search path puts pg_temp last.

    Here dr-a shadows ``reads`` (their submitted read shown as a draft) and ``audit`` (an entry of their own
    making) in their session: the lock and audit-check triggers, which run as the owner, must still see the
    store's tables and refuse the change to the submitted read.
    """
    mine = _start_read(trial("dr-a"), "dr-a")
    mine.submit()
    read_id = mine.read.read_id
    reader = psycopg.connect(trial("dr-a").url, autocommit=True)
    try:
        reader.execute("CREATE TEMP TABLE reads AS SELECT * FROM public.reads WHERE read_id = %s", (read_id,))
        reader.execute("UPDATE pg_temp.reads SET status = 'draft'")
        reader.execute("CREATE TEMP TABLE audit AS SELECT * FROM public.audit WHERE false")
        reader.execute("BEGIN")
        reader.execute("INSERT INTO pg_temp.audit (seq, at, actor, action, entity, detail, prev_hash, hash, xact) "
                       "VALUES (1, 'now', 'dr-a', 'edit comment', %s, '{}', '', '', txid_current())",
                       (f"read:{read_id}",))
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="submitted"):
            reader.execute("UPDATE public.lesions SET data = replace(data, '\"comment\": \"\"', "
                           "'\"comment\": \"changed after submit\"') WHERE read_id = %s", (read_id,))
        reader.execute("ROLLBACK")
    finally:
        reader.close()
    stored = test_postgres_store.load_read(trial(), read_id)
    assert stored.status == "submitted" and stored.lesions[0].comment == ""
    verification = audit.verify(trial().db)
    assert verification.ok, verification.reason


def test_every_function_of_the_store_that_runs_as_the_owner_searches_temporary_tables_last(trial):
    owner = _raw(trial())
    try:
        unsafe = [r[0] for r in owner.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace "
            "AND (p.prosecdef OR p.proconfig IS NOT NULL) "
            "AND NOT ('search_path=public, pg_temp' = ANY (COALESCE(p.proconfig, '{}')))")]
    finally:
        owner.close()
    assert unsafe == [], ("say SET search_path = public, pg_temp in these functions: without pg_temp last, a "
                          f"reader's temporary tables stand in for the store's inside them: {unsafe}")
# -- issue-16 trial: what a reader's login is told when it names someone else or runs a coordinator's command -------
def test_a_reader_naming_another_reader_is_told_the_login_reads_as_itself(trial, tmp_path):
    """It was told "'dr-b' is not a reader of reading study 'trial'", which is false."""
    url = trial("dr-a").root
    code, out = run_cli("view", "--reader", "dr-b", "--reading-study", "trial", "--screenshot",
                        tmp_path / "never.png", "--store", url)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "'dr-a'" in out and "not a reader" not in out, out
    assert not (tmp_path / "never.png").exists()


def test_a_readers_login_opening_the_viewer_without_a_reading_study_is_told_how(trial, tmp_path):
    """It was told "store: permission denied for table images"."""
    code, out = run_cli("view", "--screenshot", tmp_path / "never.png", "--store", trial("dr-a").root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "--reading-study" in out and "trial" in out and "permission denied" not in out, out


def test_a_coordinators_command_run_by_a_reader_says_whose_it_is(trial, tmp_path):
    code, out = run_cli("reading-study", "package", "trial", "--reader", "dr-a", "--out", tmp_path / "pkg",
                        "--store", trial("dr-a").root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "coordinator" in out and "nothing was changed" in out, out
    assert not (tmp_path / "pkg").exists()


def test_a_reader_running_link_leaves_no_link_key_file(trial, tmp_path):
    """Refused, but the new link key file was left behind in the reader's folder."""
    key = tmp_path / "key.sqlite"
    code, out = run_cli("link", "from-patient-ids", "trial", "--link-key", key, "--store", trial("dr-a").root)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "coordinator" in out and "'dr-a'" in out, out
    assert not key.exists()
# -- nothing a reader's login can select holds an identifier of the source -----------------------------------------
def _source_identifiers(owner: PgConnection) -> set[str]:
    """Every identifier of the source studies the coordinator's store holds: UIDs, names (and their parts), IDs,
    accession numbers, institutions, descriptions, dates (several spellings), the source volumes' ids."""
    found: set[str] = set()
    for sql in ("SELECT study_uid, accession, institution, description, study_date FROM studies",
                "SELECT patient_id, patient_name, birth_date FROM patients", "SELECT series_uid FROM dicom_series",
                "SELECT sop_uid FROM images", "SELECT volume_id FROM volumes"):
        for row in owner.execute(sql):
            for value in row:
                if value:
                    found.add(str(value))
                    found.update(part for part in str(value).replace("^", " ").split() if len(part) > 3)
    for date in [v for v in found if len(v) == 8 and v.isdigit()]:
        found.update({f"{date[:4]}-{date[4:6]}-{date[6:]}", f"{date[6:]}.{date[4:6]}.{date[:4]}",
                      f"{date[6:]}/{date[4:6]}/{date[:4]}"})
    return found


def _everything_selectable(connection: PgConnection, read_ids: list[str]) -> list[tuple[str, str]]:
    """(where, text) of every value the login can select: each column it may select of every table and view of the
    schema, and what the store's functions it may run return about its reads."""
    values: list[tuple[str, str]] = []
    relations = connection.execute(
        "SELECT c.relname, array_agg(quote_ident(a.attname) ORDER BY a.attnum) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped "
        "AND has_column_privilege(c.oid, a.attnum, 'SELECT') GROUP BY c.relname").fetchall()
    for relation, columns in relations:
        for row in connection.execute(f"SELECT {', '.join(columns)} FROM {relation}"):
            values += [(relation, str(v)) for v in row if v is not None]
    for read_id in read_ids:
        for call in ("cno_read_json(?::text)", "cno_read_state(?::text)", "cno_audited_state('read:' || ?)"):
            values.append((call, str(connection.execute(f"SELECT {call}", (read_id,)).fetchone()[0])))
    values.append(("cno_live_channel()", str(connection.execute("SELECT cno_live_channel()").fetchone()[0])))
    return values


def test_nothing_a_readers_or_adjudicators_login_can_select_holds_a_source_identifier(trial):
    from cno_annotate import packages
    from cno_annotate.store import published

    owner = trial()
    secret = packages._secret(owner, "trial")
    for case in rs.cases(owner, "trial"):  # the cases are on the study PACS, under their stand-in study UIDs
        published.record_case(owner, "trial", case.reading_code, packages.stand_in_uid(secret, case.study_uid), 3,
                              {}, "web", "coordinator")
    mine = _start_read(trial("dr-a"), "dr-a")
    mine.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], "1.2.3.4")
    mine.submit()
    ReadSession.open_or_create(trial("dr-a"), rs.study_uid_of(trial("dr-a"), "trial", "CNO-0002"), "dr-a",
                               reading_study="trial").add_reading_time(5.0)  # only opened: rs_opened
    adjudicator = trial(ADJUDICATOR)
    theirs = ReadSession.open_or_create(adjudicator, rs.study_uid_of(adjudicator, "trial", "CNO-0001"), ADJUDICATOR,
                                        reading_study="trial", role="adjudicator")
    theirs.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    raw_owner = _raw(owner)
    try:
        identifiers = _source_identifiers(raw_owner)
    finally:
        raw_owner.close()
    assert len(identifiers) > 30
    for login, read_ids in (("dr-a", [mine.read.read_id]), (ADJUDICATOR, [mine.read.read_id, theirs.read.read_id])):
        connection = _raw(trial(login))
        try:
            values = _everything_selectable(connection, read_ids)
        finally:
            connection.close()
        assert {where for where, _ in values} >= {"reads", "lesions", "audit", "rs_cases_seen", "rs_published"}
        leaks = [(login, where, identifier) for where, text in values for identifier in identifiers
                 if identifier in text]
        assert leaks == [], leaks[:5]
    # the coordinator's side still knows each read's source study (the one mapping of stand-ins back)
    assert load_read(owner, mine.read.read_id).study_uid == rs.study_uid_of(owner, "trial", "CNO-0001")
    statuses = {e["reading_code"]: e["status"] for e in rs.worklist(owner, "trial", "dr-a")}
    assert (statuses["CNO-0001"], statuses["CNO-0002"]) == ("submitted", "opened")
    assert [r.read_id for r in rs.adjudication_reads(owner, "trial", "CNO-0001", ADJUDICATOR)] == [mine.read.read_id]


def test_a_package_readers_reads_collected_into_a_server_store_hold_no_source_uid_their_login_sees(trial, tmp_path):
    """A reader who read offline (a package) and also has a server login: the collected reads are keyed by the case's
    key and their lesions name the package's stand-in series (the coordinator's exports map them back)."""
    from cno_annotate import packages
    from tests.voxels import voxel_at

    owner = trial()
    packages.build(owner, "trial", "dr-a", tmp_path / "package")
    package = packages.open_package(tmp_path / "package")
    offline = Store.open(package.store_root)
    try:
        code = rs.worklist(offline, "trial", "dr-a")[0]["reading_code"]
        uid = rs.study_uid_of(offline, "trial", code)
        session = ReadSession.open_or_create(offline, uid, "dr-a", reading_study="trial")
        series = offline.volumes(uid)[-1].volume_id
        session.add_lesion((-70.0, 0.0, -400.0), series, voxel_at(offline, series, (-70.0, 0.0, -400.0)),
                           site_id="femur.distal", side="R")
        session.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], series)
        session.submit()
    finally:
        offline.close()
    assert run_cli("reading-study", "export-results", "--package", package.folder, "--out", tmp_path / "r.json")[0] == 0
    status, out = run_cli("reading-study", "collect", "trial", tmp_path / "r.json", "--store", owner.root)
    assert status == 0, out
    raw_owner = _raw(owner)
    try:
        identifiers = _source_identifiers(raw_owner)
    finally:
        raw_owner.close()
    read_id = list_reads(owner, reader="dr-a", reading_study="trial")[0]["read_id"]
    connection = _raw(trial("dr-a"))
    try:
        values = _everything_selectable(connection, [read_id])
    finally:
        connection.close()
    assert [(where, i) for where, text in values for i in identifiers if i in text] == []
    exported = load_read(owner, read_id)  # the coordinator's side: the source study and series
    assert exported.study_uid == rs.study_uid_of(owner, "trial", code)
    from cno_annotate.export_reads import load_for_export

    (resolved,) = load_for_export(owner, [read_id])
    assert resolved.lesions[0].series_uid in identifiers and resolved.rois[0].series_uid in identifiers


# -- what a study lets a reader know of a case (age at the visit, sex) ----------------------------------------------
def test_a_reader_of_a_study_showing_age_and_sex_gets_them_under_their_login_and_nothing_more(trial):
    owner = trial()
    rs.create(owner, "shown", seed=3, show_age_sex=True)
    rs.add_cases(owner, "shown", sorted(owner.study_uids()))
    rs.add_readers(owner, "shown", ["dr-a"])
    rs.assign(owner, "shown")
    expected = {}
    for case in rs.worklist(owner, "shown", "dr-a"):
        info = next(s for s in owner.studies() if s.study_uid == rs.study_uid_of(owner, "shown", case["reading_code"]))
        expected[case["reading_code"]] = {"sex": info.sex or None, "age_years": age_years(info.birth_date, info.study_date)}
    assert any(v["age_years"] is not None for v in expected.values())
    reader = trial("dr-a")
    study = rs.get(reader, "shown")
    for code, wanted in expected.items():
        assert rs.case_details(reader, study, code) == wanted
    assert rs.case_details(reader, rs.get(reader, "trial"), "CNO-0001") == {}  # this study shows neither
    raw = _raw(reader)
    try:  # the server gives those two values only, and only of the caller's worklist of a study that shows them
        assert raw.execute("SELECT * FROM cno_case_age_sex('trial', 'CNO-0001')").fetchall() == []
        assert raw.execute("SELECT * FROM cno_case_age_sex('shown', 'CNO-9999')").fetchall() == []
    finally:
        raw.close()
    other = trial("dr-b")  # not a reader of 'shown'
    raw = _raw(other)
    try:
        assert raw.execute("SELECT * FROM cno_case_age_sex('shown', ?)", (next(iter(expected)),)).fetchall() == []
    finally:
        raw.close()


def test_a_readers_own_exports_on_the_server_hold_no_source_identifier(trial, tmp_path):
    """`read export` and `export-csv` run with a reader's login write stand-ins, never a source UID or identifier."""
    mine = _start_read(trial("dr-a"), "dr-a")
    mine.submit()
    ReadSession.open_or_create(trial("dr-a"), rs.study_uid_of(trial("dr-a"), "trial", "CNO-0002"), "dr-a",
                               reading_study="trial").add_reading_time(5.0)  # only opened
    url = trial("dr-a").root
    assert run_cli("read", "export", "--store", url, "--out", tmp_path / "mine.json")[0] == 0
    assert run_cli("export-csv", "--store", url, "--out", tmp_path / "csv", "--reading-study", "trial")[0] == 0
    assert run_cli("export-csv", "--store", url, "--out", tmp_path / "all")[0] == 0
    owner = trial()
    identifiers = _source_identifiers(owner.db)
    written = [tmp_path / "mine.json", *sorted((tmp_path / "csv").iterdir()), *sorted((tmp_path / "all").iterdir())]
    written = [path for path in written if path.name != "columns.csv"]  # the codebook: column names ('follow-up')
    leaks = [(path.name, value) for path in written for value in identifiers if value in path.read_text()]
    assert not leaks, leaks
    assert mine.read.study_uid not in identifiers and mine.read.study_uid in (tmp_path / "mine.json").read_text()

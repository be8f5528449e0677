"""Edits on a shared PostgreSQL store made by the database in one statement (issue 16, edit latency).

Round trips are counted on the wire (libpq's protocol trace of the session: every request that waits for
the server's answer), not timed. A lesion edit costs one round trip: the database checks the revision and
the audited state, writes the change, its audit entry and the revision bump, and returns the read. The
content hash the database records must be the one ``audit verify`` computes, and a change made to the data
directly must still be found and refused.
"""

from __future__ import annotations

import psycopg
import pytest

from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.errors import CnoError, StoreWriteError
from cno_annotate.store import Store, audit
from cno_annotate.store.db import INTERACTIVE_BUSY_TIMEOUT
from cno_annotate.store.postgres import PgConnection, round_trips
from tests import test_postgres_store
from tests.test_postgres_store import _start_read

STUDY = "1.2.826.0.1.3680043.99.16"
#: An edit may take this many round trips at most: the write (checked, audited, returning the read) and one spare.
MOST_ROUND_TRIPS_PER_EDIT = 2
trial = test_postgres_store.trial  # the fixture: a Store on this test's copy of the trial database, as a login


@pytest.fixture
def pg_store(pg_database):
    store = Store.open(pg_database())
    yield store
    store.close()


def _session_with_a_lesion(store: Store) -> tuple[ReadSession, str]:
    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    lesion = session.add_lesion((-70.0, 0.0, -400.0), "1.2.3", (1, 2, 3), site_id="femur.distal", side="R")
    return session, lesion


def test_the_probe_counts_round_trips(pg_store):
    """The counter sees each statement as one round trip (so the bound below can fail)."""
    with round_trips(pg_store.db) as counted:
        for _ in range(3):
            pg_store.db.execute("SELECT 1").fetchone()
    assert counted.total == 3


def test_a_lesion_edit_takes_at_most_two_round_trips(pg_store):
    session, lesion = _session_with_a_lesion(pg_store)
    with round_trips(pg_store.db) as first:
        session.update_lesion(lesion, comment="first edit")
    with round_trips(pg_store.db) as later:
        session.set_grade(lesion, "marrow_hyperintensity", 2)
    assert first.total <= MOST_ROUND_TRIPS_PER_EDIT, first.messages
    assert later.total <= MOST_ROUND_TRIPS_PER_EDIT, later.messages
    stored = load_read(pg_store, session.read.read_id)
    assert stored == session.read  # what the session holds is what the store holds
    assert stored.lesion(lesion).comment == "first edit" and stored.lesion(lesion).grades["marrow_hyperintensity"] == 2
    assert audit.verify(pg_store.db).ok


def test_a_reopened_read_is_edited_in_at_most_two_round_trips(pg_store):
    session, lesion = _session_with_a_lesion(pg_store)
    other = Store.open(pg_store.url)
    try:
        reopened = ReadSession.open(other, session.read.read_id, "dr-a")
        with round_trips(other.db) as counted:
            reopened.update_lesion(lesion, comment="from the second window")
        assert counted.total <= MOST_ROUND_TRIPS_PER_EDIT, counted.messages
    finally:
        other.close()


#: Text that JSON escapes in every way it can: quotes, backslashes, control characters, non-ASCII, astral plane.
AWKWARD = 'a "quoted" \\ back\\slash\nnew line\ttab\x01\x1f\x7f é 漢字 😀 \u2028 \\u0041 %s ?'


def test_the_database_hashes_a_read_as_audit_verify_does(pg_store):
    """Lesions, marks, grades, ROIs and a follow-up, with awkward text: the server's state equals Python's."""
    session, lesion = _session_with_a_lesion(pg_store)
    session.update_lesion(lesion, comment=AWKWARD)
    session.set_grade(lesion, "marrow_hyperintensity", 2)
    session.mark_unit("spine.L5", "no_lesion")
    session.add_roi("ellipse", "coronal", [(0.0, 0.0, 0.0), (10.0, 0.0, 8.0)], "1.2.3")
    session.submit()
    follow = ReadSession.open_or_create(pg_store, STUDY + ".2", "dr-a")
    follow.follow_up(session.read.read_id)
    tracking = session.read.lesions[0].tracking_uid
    follow.set_outcome(tracking, "persisting", {"position": (1.0, 2.0, 3.0), "series_uid": "1.2.4",
                                                "voxel": (1, 2, 3), "comment": AWKWARD[::-1]})
    for read_id in (session.read.read_id, follow.read.read_id):
        server = pg_store.db.execute("SELECT cno_read_state(?)", (read_id,)).fetchone()[0]
        assert server == audit.read_state(pg_store.db, read_id)
    assert pg_store.db.execute("SELECT cno_read_state('no such read')").fetchone()[0] is None
    assert audit.verify(pg_store.db).ok


def _tamper(store: Store, sql: str, read_id: str) -> None:
    """The store's owner changes the data directly, past the commit-time audit check."""
    owner = PgConnection(store.url)
    try:
        with owner.transaction():
            owner.execute("ALTER TABLE lesions DISABLE TRIGGER lesions_audited")
            owner.execute(sql, (read_id,))
            owner.execute("ALTER TABLE lesions ENABLE TRIGGER lesions_audited")
    finally:
        owner.close()


def test_a_direct_change_is_refused_by_the_next_edit_and_found_by_verify(pg_store):
    session, lesion = _session_with_a_lesion(pg_store)
    session.set_grade(lesion, "marrow_hyperintensity", 2)
    read_id, revision = session.read.read_id, session.read.revision
    entries = len(audit.entries(pg_store.db, 1000))
    _tamper(pg_store, "UPDATE lesions SET data = replace(data, '\"marrow_hyperintensity\": 2', "
                      "'\"marrow_hyperintensity\": 0') WHERE read_id = ?", read_id)
    with pytest.raises(CnoError, match=f"^read {read_id} was changed outside the program since its last audited "
                                       f"change; run cno-annotate store check$"):
        session.update_lesion(lesion, comment="would launder the change")
    assert len(audit.entries(pg_store.db, 1000)) == entries  # nothing was written
    assert load_read(pg_store, read_id).revision == revision
    assert not audit.verify(pg_store.db).ok


def test_a_conflicting_edit_is_refused_and_the_read_reloaded_in_one_round_trip(pg_store):
    """A stale copy's edit is refused with the read as stored (migration 29): one round trip, then no reload."""
    from cno_annotate.errors import ReadConflict

    session, lesion = _session_with_a_lesion(pg_store)
    other = Store.open(pg_store.url)
    try:
        second = ReadSession.open(other, session.read.read_id, "dr-a")
        second.update_lesion(lesion, comment="second window first")
        with round_trips(pg_store.db) as counted, pytest.raises(ReadConflict, match="changed in another window"):
            session.update_lesion(lesion, comment="stale copy")
        assert session.read.lesion(lesion).comment == "second window first"  # reloaded, nothing lost
        assert counted.total == 1, counted.messages  # the refusal brings the read as stored: no reload after it
        assert session.read == load_read(pg_store, session.read.read_id)
        second_lesion = session.add_lesion((1.0, 2.0, 3.0), "1.2.3", (1, 2, 3))
        assert second_lesion == "L2" and load_read(other, session.read.read_id).lesion("L2")
    finally:
        other.close()
    assert audit.verify(pg_store.db).ok


# -- one chain per read (migration 22): edits of different reads do not queue on one lock ------------------
def _edit_in_flight(store: Store, read_id: str) -> PgConnection:
    """Another session's edit of ``read_id``, applied by the database and not yet committed (its locks held)."""
    owner = PgConnection(store.url)
    owner.execute("BEGIN")
    revision = owner.execute("SELECT revision FROM reads WHERE read_id = ?", (read_id,)).fetchone()[0]
    found = owner.execute("SELECT cno_edit_read(?::text, ?::bigint, NULL, 'now', 'dr-a', 'edit comment', "
                          "'{}'::jsonb, '{\"after\": null, \"before\": null}')", (read_id, revision)).fetchone()[0]
    assert "refused" not in found
    return owner


def test_an_edit_does_not_wait_for_another_reads_edit_in_flight(pg_store):
    """While one read's edit is written but not committed, another read's edit goes through at once.

    With one chain for the whole store, the second edit waited for the first one's commit (here: until
    the lock wait of an interactive session ran out, and it was refused).
    """
    first, _ = _session_with_a_lesion(pg_store)
    impatient = Store.open(pg_store.url, busy_timeout=INTERACTIVE_BUSY_TIMEOUT)
    owner = None
    try:
        second = ReadSession.open_or_create(impatient, STUDY + ".2", "dr-b")
        lesion = second.add_lesion((1.0, 2.0, 3.0), "1.2.3", (1, 2, 3), site_id="femur.distal", side="R")
        owner = _edit_in_flight(pg_store, first.read.read_id)
        second.update_lesion(lesion, comment="not kept waiting")
        same_read = ReadSession.open(impatient, first.read.read_id, "dr-a")
        with pytest.raises(StoreWriteError):  # the same read's edits do wait for one another (and the lock is real)
            same_read.update_lesion(first.read.lesions[0].lesion_id, comment="waits for the first")
        owner.execute("COMMIT")
        assert load_read(pg_store, second.read.read_id).lesion(lesion).comment == "not kept waiting"
    finally:
        if owner is not None:
            owner.close()
        impatient.close()
    assert audit.verify(pg_store.db).ok


def test_a_new_read_does_not_wait_for_another_reads_edit_in_flight(pg_store):
    first, _ = _session_with_a_lesion(pg_store)
    impatient = Store.open(pg_store.url, busy_timeout=INTERACTIVE_BUSY_TIMEOUT)
    owner = _edit_in_flight(pg_store, first.read.read_id)
    try:
        other = ReadSession.open_or_create(impatient, STUDY + ".3", "dr-b")
        other.add_lesion((1.0, 2.0, 3.0), "1.2.3", (1, 2, 3))  # creates the read: its chain begins on the spine
        owner.execute("COMMIT")
    finally:
        owner.close()
        impatient.close()
    assert audit.verify(pg_store.db).ok


def test_an_anchor_waits_for_entries_being_written_so_none_can_appear_before_it(pg_store):
    first, _ = _session_with_a_lesion(pg_store)
    owner = _edit_in_flight(pg_store, first.read.read_id)
    impatient = Store.open(pg_store.url, busy_timeout=INTERACTIVE_BUSY_TIMEOUT)
    try:
        with pytest.raises(psycopg.errors.LockNotAvailable):
            audit.anchor(impatient.db)
        owner.execute("COMMIT")
        anchor = audit.anchor(impatient.db)
        newest = pg_store.db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
        assert anchor.split(":")[1] == str(newest)
        first.reload()
        first.update_lesion(first.read.lesions[0].lesion_id, comment="after the anchor")
        assert audit.verify(pg_store.db, anchor).ok
    finally:
        owner.close()
        impatient.close()


# -- a read's other writes, one round trip each (migration 23: cno_change_read) ----------------------------
def test_a_new_reads_first_change_is_one_round_trip_with_its_creation_and_earlier_time(pg_store):
    session = ReadSession.open_or_create(pg_store, STUDY, "dr-a")
    session.add_reading_time(12.5)  # measured before the read exists: written with its first change
    with round_trips(pg_store.db) as counted:
        lesion = session.add_lesion((-70.0, 0.0, -400.0), "1.2.3", (1, 2, 3), site_id="femur.distal", side="R")
    assert counted.total == 1, counted.messages
    stored = load_read(pg_store, session.read.read_id)
    assert stored == session.read and stored.lesion(lesion) and stored.active_seconds == pytest.approx(12.5)
    actions = [e["action"] for e in audit.entries(pg_store.db) if e["entity"] == f"read:{stored.read_id}"]
    assert actions[0] == "create" and len(actions) == 2
    assert audit.verify(pg_store.db).ok


def test_submit_is_one_round_trip(pg_store):
    session, _ = _session_with_a_lesion(pg_store)
    with round_trips(pg_store.db) as counted:
        session.submit()
    assert counted.total == 1, counted.messages
    stored = load_read(pg_store, session.read.read_id)
    assert stored.status == "submitted" and stored == session.read
    submitted = [e for e in audit.entries(pg_store.db) if e["action"] == "submit"]
    assert len(submitted) == 1 and submitted[0]["detail"]["total"] == session.scores().total
    assert audit.verify(pg_store.db).ok


def test_reading_time_is_one_round_trip_and_none_is_added_once_submitted_elsewhere(pg_store):
    session, _ = _session_with_a_lesion(pg_store)
    with round_trips(pg_store.db) as counted:
        session.add_reading_time(30)
    assert counted.total == 1, counted.messages
    assert session.reading_time == pytest.approx(30) == load_read(pg_store, session.read.read_id).active_seconds
    other = Store.open(pg_store.url)
    try:
        ReadSession.open(other, session.read.read_id, "dr-a").submit()
    finally:
        other.close()
    with round_trips(pg_store.db) as counted:
        session.add_reading_time(5)  # this window still holds a draft: the store adds nothing to a submitted read
    assert counted.total == 1
    assert load_read(pg_store, session.read.read_id).active_seconds == pytest.approx(30)


def test_follow_up_is_written_in_one_round_trip_after_the_prior_read_is_loaded(pg_store):
    prior, _ = _session_with_a_lesion(pg_store)
    prior.submit()
    follow = ReadSession.open_or_create(pg_store, STUDY + ".2", "dr-a")
    with round_trips(pg_store.db) as counted:
        follow.follow_up(prior.read.read_id)  # showing the prior is no change: the new read is not made yet
    assert counted.total == 1, counted.messages  # the prior read (one statement)
    assert pg_store.db.execute("SELECT COUNT(*) FROM reads WHERE read_id = ?", (follow.read.read_id,)).fetchone()[0] == 0
    with round_trips(pg_store.db) as counted:
        follow.set_outcome(prior.read.lesions[0].tracking_uid, "resolved")  # makes the read, its link and outcome
    assert counted.total == 1, counted.messages
    stored = load_read(pg_store, follow.read.read_id)
    assert stored.followup is not None and stored.followup.prior_read_id == prior.read.read_id
    assert stored == follow.read
    assert audit.verify(pg_store.db).ok


# -- what the server computes for one edit (migration 29) -----------------------------------------------------------
def _calls_in_one_transaction(connection: PgConnection, sql: str, params: tuple) -> tuple[object, dict[str, int]]:
    """The statement's result and how often each hashing function of the store ran for it.

    Counted within its transaction (no counts are flushed while it is open); the view also holds counts
    of the session's earlier transactions not yet flushed, hence the difference.
    """
    def counts() -> dict[str, int]:
        return dict(connection.execute("SELECT funcname, calls FROM pg_stat_xact_user_functions "
                                       "WHERE funcname IN ('cno_read_state', 'cno_audited_state')").fetchall())

    connection.execute("BEGIN")
    before = counts()
    found = connection.execute(sql, params).fetchone()[0]
    after = counts()
    connection.execute("COMMIT")
    return found, {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}


def test_a_readers_edit_hashes_the_read_twice_and_a_stale_copy_not_at_all(trial, pg_server):
    """The state before and after an edit is hashed once each, the audited state read once, under any login.

    Under the reader's row security ``cno_change_read`` hashed the state three times and read the audited
    state twice (``cno_audit_append`` checked again what it was just given), and a stale copy was hashed
    before it was refused.
    """
    session = _start_read(trial("dr-a"), "dr-a")
    database = trial().url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.url(database), autocommit=True) as superuser:  # counted from the next session on
        superuser.execute(f'ALTER DATABASE "{database}" SET track_functions = \'pl\'')
    reader = PgConnection(trial("dr-a").url)
    edit = ("SELECT cno_change_read(?::text, ?::bigint, NULL, 'now', 'dr-a', 'edit comment', '{}'::jsonb, "
            "'{\"after\": null, \"before\": null}', '{}'::jsonb, NULL)")
    try:
        found, calls = _calls_in_one_transaction(reader, edit, (session.read.read_id, session.read.revision))
        assert "refused" not in found
        assert calls == {"cno_read_state": 2, "cno_audited_state": 1}
        found, calls = _calls_in_one_transaction(reader, edit, (session.read.read_id, session.read.revision))
        assert found["refused"] == {"status": "draft", "revision": session.read.revision + 1}
        assert found["read"]["row"]["revision"] == session.read.revision + 1  # the read as stored comes with it
        assert calls == {}
    finally:
        reader.close()
    verification = audit.verify(trial().db)
    assert verification.ok, verification.reason


def test_a_readers_edit_runs_no_sql_function_that_is_planned_at_every_call(trial, pg_server):
    """Every function an edit runs keeps its plans for the session (migration 31): none is a SQL function.

    A SQL function the planner does not inline (``cno_json``, declared IMMUTABLE around the STABLE ``to_json``;
    ``cno_read_json`` and ``cno_reader_entry_allowed``, which set their search path) is planned again at every
    call: about twenty plans per content hash. With ``track_functions = 'all'`` such calls are counted; an
    inlined SQL function is not called at all.
    """
    session = _start_read(trial("dr-a"), "dr-a")
    database = trial().url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.url(database), autocommit=True) as superuser:  # counted from the next session on
        superuser.execute(f'ALTER DATABASE "{database}" SET track_functions = \'all\'')
        sql_functions = {row[0] for row in superuser.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.pronamespace = 'public'::regnamespace AND l.lanname = 'sql'")}
    reader = PgConnection(trial("dr-a").url)
    try:
        reader.execute("BEGIN")
        found = reader.execute("SELECT cno_change_read(?::text, ?::bigint, NULL, 'now', 'dr-a', 'edit comment', "
                               "'{}'::jsonb, '{\"after\": null, \"before\": null}', '{}'::jsonb, NULL)",
                               (session.read.read_id, session.read.revision)).fetchone()[0]
        ran = {row[0] for row in reader.execute("SELECT funcname FROM pg_stat_xact_user_functions").fetchall()}
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert "refused" not in found
    assert "cno_read_state" in ran  # the counting works
    assert ran & sql_functions == set()
    assert audit.verify(trial().db).ok

"""A case opened only to look at it follows the reader's worklist (issue 12 defect 14, issue 16).

A coordinator who takes a case off a reader's worklist, or moves it to another reader, expects
that reader's progress to stop counting the case as opened and its looked-at time; the time is
kept in the audit entry of the move. The database enforces it (SQLite triggers, PostgreSQL
triggers and row security): a worklist row deleted by any program forgets the opened record,
and no opening is recorded for a case off the worklist. Re-assigning with another seed only
reorders the worklists, so what a reader opened stays.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store, audit
from cno_annotate.store.reading_studies import case_key
from tests.conftest import integrity_error

STORE_BACKENDS = ("sqlite", "postgresql")
BACKEND_FIXTURES = ("trial",)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opened-studies")
    for seed in range(3):
        generate_study(folder / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=40 + seed))
    return folder


@pytest.fixture
def trial(request, tmp_path, studies):
    """``trial(login)`` -> a Store of reading study 'trial' (3 cases, readers dr-a and dr-b, adjudicator dr-adj),
    as that login on a server (the owner, a coordinator, by default); on SQLite every login opens the one file."""
    opened: list[Store] = []
    if getattr(request, "param", "sqlite") == "postgresql":
        url = request.getfixturevalue("trial_database")

        def login(who: str = "cno_owner") -> Store:
            opened.append(Store.open(url(who)))
            return opened[-1]
    else:
        store = Store.open(tmp_path / "store")
        import_paths(store, [studies])
        rs.create(store, "trial", seed=7)
        rs.add_cases(store, "trial", sorted(store.study_uids()))
        rs.add_readers(store, "trial", ["dr-a", "dr-b"])
        rs.add_readers(store, "trial", ["dr-adj"], role="adjudicator")
        rs.assign(store, "trial")
        store.close()

        def login(who: str = "cno_owner") -> Store:
            opened.append(Store.open(tmp_path / "store"))
            return opened[-1]
    yield login
    for s in opened:
        s.close()


def _progress(store: Store, reader: str) -> dict:
    return next(p for p in rs.progress(store, "trial") if p["reader"] == reader)


def _look(store: Store, code: str, seconds: float, reader: str = "dr-a") -> ReadSession:
    session = ReadSession.open_or_create(store, rs.study_uid_of(store, "trial", code), reader, reading_study="trial")
    session.add_reading_time(seconds)
    return session


def _opened_rows(store: Store, reader: str) -> int:
    return store.db.execute("SELECT COUNT(*) FROM rs_opened WHERE reader = ?", (reader,)).fetchone()[0]


def test_a_case_moved_to_another_reader_leaves_the_readers_progress_and_its_time_stays_in_the_audit(trial):
    coordinator, reader = trial(), trial("dr-a")
    first, second = (e["reading_code"] for e in rs.worklist(reader, "trial", "dr-a")[:2])
    window = _look(reader, first, 30.0)  # looked at, no change; the window stays open
    _look(reader, second, 12.0)
    before = _progress(coordinator, "dr-a")
    assert (before["opened"], before["not started"], before["active_seconds"]) == (2, 1, pytest.approx(42.0))
    rs.add_readers(coordinator, "trial", ["dr-c"])  # a new reader, no worklist yet
    done = rs.move_case(coordinator, "trial", first, "dr-a", to="dr-c")
    assert (done["to"], done["position"], done["looked_seconds"]) == ("dr-c", 1, pytest.approx(30.0))
    after = _progress(coordinator, "dr-a")
    assert (after["opened"], after["not started"], after["active_seconds"]) == (1, 1, pytest.approx(12.0))
    assert [e["reading_code"] for e in rs.worklist(coordinator, "trial", "dr-c")] == [first]
    assert _progress(coordinator, "dr-c")["opened"] == 0  # the new reader has not opened it
    entry = coordinator.db.execute("SELECT detail FROM audit WHERE action = 'move-case' ORDER BY seq DESC "
                                   "LIMIT 1").fetchone()[0]
    assert json.loads(entry)["after"]["looked_seconds"] == pytest.approx(30.0)
    assert _opened_rows(coordinator, "dr-a") == 1  # the database forgot the moved case's record
    window.add_reading_time(5.0)  # dr-a's window on the moved case keeps ticking: refused quietly, not recorded
    assert _opened_rows(coordinator, "dr-a") == 1
    assert _progress(coordinator, "dr-a")["active_seconds"] == pytest.approx(12.0)
    rs.move_case(coordinator, "trial", first, "dr-c", to="dr-a")  # back: not started, the old record is gone
    status = {e["reading_code"]: e["status"] for e in rs.worklist(coordinator, "trial", "dr-a")}
    assert (status[first], status[second]) == ("not started", "opened")
    assert audit.verify(coordinator.db).ok


def test_a_case_taken_off_a_worklist_with_a_read_is_refused_and_one_without_is_not_counted(trial):
    coordinator, reader = trial(), trial("dr-a")
    codes = [e["reading_code"] for e in rs.worklist(reader, "trial", "dr-a")]
    session = _look(reader, codes[0], 3.0)
    session.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    _look(reader, codes[1], 8.0)
    with pytest.raises(Exception, match="has a draft read of"):
        rs.move_case(coordinator, "trial", codes[0], "dr-a")
    done = rs.move_case(coordinator, "trial", codes[1], "dr-a")  # off every worklist
    assert (done["to"], done["looked_seconds"]) == (None, pytest.approx(8.0))
    progress = _progress(coordinator, "dr-a")
    assert (progress["opened"], progress["draft"], progress["not started"]) == (0, 1, 1)
    assert progress["active_seconds"] == pytest.approx(3.0)


def test_assigning_again_reorders_and_keeps_what_a_reader_opened(trial):
    coordinator, reader = trial(), trial("dr-a")
    code = rs.worklist(reader, "trial", "dr-a")[0]["reading_code"]
    _look(reader, code, 20.0)
    rs.assign(coordinator, "trial", seed=99)
    progress = _progress(coordinator, "dr-a")
    assert (progress["opened"], progress["active_seconds"]) == (1, pytest.approx(20.0))
    assert audit.verify(coordinator.db).ok


def _owner_connection(store: Store):
    """A raw connection as another program (the tables' owner on a server) would open it."""
    if store.folder is None:
        from cno_annotate.store.postgres import PgConnection

        return PgConnection(store.url)
    return sqlite3.connect(store.root / "store.sqlite", isolation_level=None)


def test_the_database_forgets_an_opened_record_off_the_worklist_whatever_program_writes(trial):
    coordinator, reader = trial(), trial("dr-a")
    code = rs.worklist(reader, "trial", "dr-a")[0]["reading_code"]
    # how an opening names the case: its source UID in SQLite, its key on a server (migration 30)
    uid = case_key(coordinator.db, "trial", "dr-a", rs.study_uid_of(coordinator, "trial", code))
    _look(reader, code, 9.0)
    raw = _owner_connection(coordinator)
    try:
        raw.execute("DELETE FROM rs_worklists WHERE reading_study = 'trial' AND reader = 'dr-a' AND reading_code = ?",
                    (code,))
        assert raw.execute("SELECT COUNT(*) FROM rs_opened WHERE reader = 'dr-a'").fetchone()[0] == 0
        with pytest.raises(integrity_error(coordinator), match="not on the reader's worklist"):
            raw.execute("INSERT INTO rs_opened (reading_study, reader, study_uid, opened, looked_seconds) "
                        "VALUES ('trial', 'dr-a', ?, 'now', 1)", (uid,))
    finally:
        raw.close()


@pytest.mark.sqlite_only
def test_reading_study_move_says_what_it_did(trial, cli):
    coordinator, reader = trial(), trial("dr-a")
    code = rs.worklist(reader, "trial", "dr-a")[0]["reading_code"]
    _look(reader, code, 75.0)
    assert cli("reading-study", "add-readers", "trial", "dr-c", "--store", coordinator.root)[0] == 0
    status, out, err = cli("reading-study", "move", "trial", code, "--reader", "dr-a", "--to", "dr-c",
                           "--store", coordinator.root)
    assert status == 0 and out.strip() == (f"moved {code} from dr-a's worklist to dr-c's (position 1); "
                                           f"dr-a had opened it (1 min 15 s looked at, kept in the audit)"), err
    other = rs.worklist(coordinator, "trial", "dr-b")[1]["reading_code"]
    status, out, err = cli("reading-study", "move", "trial", other, "--reader", "dr-b", "--store", coordinator.root)
    assert status == 0 and out.strip() == f"took {other} off dr-b's worklist", err
    assert [e["position"] for e in rs.worklist(coordinator, "trial", "dr-b")] == [1, 2]  # closed up, no gap
    assert other not in [e["reading_code"] for e in rs.worklist(coordinator, "trial", "dr-b")]
    status, out, err = cli("reading-study", "move", "trial", code, "--reader", "dr-a", "--store", coordinator.root)
    assert status == 1 and out == "" and err.strip().endswith(f"{code} is not on dr-a's worklist in 'trial'; "
                                                               f"nothing was changed"), err


# -- looked-only time handed to the read at its first change: exported once ---------------------------------------
def _exported_seconds(store: Store, tmp_path, cli, reader: str = "dr-a") -> tuple[list, list, float]:
    """The reader's active seconds as the JSON export, reads.csv and ``reading-study progress --json`` say."""
    import csv

    where = store.url if store.folder is None else store.root
    out = tmp_path / f"export-{len(list(tmp_path.iterdir()))}"
    code, _, err = cli("read", "export", "--reader", reader, "--out", out.with_suffix(".json"), "--store", where)
    assert code == 0, err
    in_json = [r["active_seconds"] for r in json.loads(out.with_suffix(".json").read_text())["reads"]]
    code, _, err = cli("export-csv", "--reader", reader, "--reading-study", "trial", "--out", out, "--store", where)
    assert code == 0, err
    with open(out / "reads.csv", newline="") as f:
        in_csv = [float(r["active_seconds"]) for r in csv.DictReader(f)]
    code, printed, err = cli("reading-study", "progress", "trial", "--json", "--store", where)
    assert code == 0, err
    return in_json, in_csv, next(p for p in json.loads(printed) if p["reader"] == reader)["active_seconds"]


def test_time_looked_before_the_first_change_is_exported_once(trial, tmp_path, cli):
    coordinator, reader = trial(), trial("dr-a")
    code = rs.worklist(reader, "trial", "dr-a")[0]["reading_code"]
    _look(reader, code, 20.0)
    later = _look(trial("dr-a"), code, 5.0)  # opened again in another window: adds to what was recorded
    later.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")  # takes the 25 s
    later.add_reading_time(10.0)
    in_json, in_csv, in_progress = _exported_seconds(coordinator, tmp_path, cli)
    assert in_json == [pytest.approx(35.0)] and in_csv == [pytest.approx(35.0)]
    assert in_progress == pytest.approx(35.0)

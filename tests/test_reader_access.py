"""What a reader's PostgreSQL login can reach and do, tried with raw SQL on the reader's own connection.

The server, not the program, must refuse: a reader sees their reads and the stand-in UIDs of the study
PACS, never a source (identifying) UID; appends only the audit entries the program writes for them; and
each refusal the command line meets is one line that says what happened and what to do.
"""

from __future__ import annotations

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from cno_annotate.store.postgres import PgConnection
from tests.cli_run import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
READERS = ("dr-a", "dr-b")
ADJUDICATOR = "dr-adj"


@pytest.fixture(scope="module")
def access_template(pg_server, pg_template, tmp_path_factory) -> str:
    """Two imported studies in reading study 'trial' (readers dr-a, dr-b, adjudicator dr-adj), logins granted."""
    studies = tmp_path_factory.mktemp("access-studies")
    for seed in range(2):
        generate_study(studies / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=70 + seed))
    url = pg_server.create_database("access_template")
    store = Store.open(url)
    import_paths(store, [studies])
    rs.create(store, "trial", seed=7)
    rs.add_cases(store, "trial", sorted(store.study_uids()))
    rs.add_readers(store, "trial", list(READERS))
    rs.add_readers(store, "trial", [ADJUDICATOR], role="adjudicator")
    rs.assign(store, "trial")
    store.close()
    for flag, login in [("--reader", r) for r in READERS] + [("--adjudicator", ADJUDICATOR)]:
        code, out = run_cli("store", "grant", flag, login, "--store", url)
        assert code == 0, out
        if "password (shown once): " in out:  # roles belong to the server: made once per session
            pg_server.remember(login, out.rsplit(": ", 1)[1].strip())
    return "access_template"


@pytest.fixture
def trial(pg_server, pg_database, access_template):
    """``trial(login)`` -> a Store on this test's copy of the trial database, as that login (owner by default)."""
    database = pg_database(access_template).rsplit("/", 1)[1]
    opened: list[Store] = []

    def open_as(login: str = "cno_owner") -> Store:
        opened.append(Store.open(pg_server.plain_url(database, user=login)))
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

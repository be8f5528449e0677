"""Shared fixtures: small generated studies, stores, and the CLI runner."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

# GUI tests run offscreen unless a display is asked for explicitly.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from cno_annotate.cli import main
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from tests.pacs_fixtures import move_port, nodes, pacs  # noqa: F401 (a real Orthanc, one per test module)

_DATABASES = itertools.count()  # names of the databases made on the session's PostgreSQL server
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_scans" / "wbmri-cno-01"


@pytest.fixture(autouse=True)
def _own_config_folder(tmp_path_factory, monkeypatch):
    """Every test has an empty per-user config folder (no keymap of the machine's user leaks in), and the
    session's own per-user cache folder (nothing of the machine's user's cache is trusted)."""
    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path_factory.getbasetemp() / "user-config"))
    monkeypatch.setenv("CNO_ANNOTATE_USER_CACHE", str(tmp_path_factory.getbasetemp() / "user-cache"))


@pytest.fixture(scope="session")
def small_study(tmp_path_factory) -> Path:
    """A 3-station study, 6 slices of 48 x 48 per station (generated once)."""
    out = tmp_path_factory.mktemp("small") / "study"
    generate_study(out, StudyPlan(stations=3, slices=6, matrix=48, seed=3))
    return out


@pytest.fixture(scope="session")
def sample_truth() -> dict:
    """Ground truth of the bundled sample study."""
    return json.loads((SAMPLE / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Store:
    """A store holding the bundled sample study (imported once, read-only use)."""
    store = Store.open(tmp_path_factory.mktemp("sample-store"))
    import_paths(store, [SAMPLE / "DICOM"])
    return store


@pytest.fixture
def sample_copy(tmp_path, sample_store):
    """Copies of the sample store (one study with its series): ``sample_copy("name")`` -> a Store."""
    opened = []

    def copy(name: str = "sample-copy") -> Store:
        target = tmp_path / name
        shutil.copytree(sample_store.root, target)
        opened.append(Store.open(target))
        return opened[-1]

    yield copy
    for s in opened:
        s.close()


@pytest.fixture
def store(request, tmp_path) -> Store:
    """An empty store: SQLite, or (in modules that list it in STORE_BACKENDS) a database on the test server."""
    s = new_store(request, tmp_path / "store")
    yield s
    s.close()


def new_store(request, folder: Path) -> Store:
    """An empty store on the backend the test was given (``request.param``; SQLite by default, in ``folder``)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return Store.open(request.getfixturevalue("pg_database")())
    return Store.open(folder)


@pytest.fixture
def other_connection():
    """``other_connection(store)``: a second, raw connection to the same store (as another program would open).

    SQLite's ``sqlite3`` connection, or a session on the same PostgreSQL database; both take ``?``
    placeholders. Closed at the end of the test.
    """
    import sqlite3

    opened = []

    def connect(store):
        if store.folder is None:
            from cno_annotate.store.postgres import PgConnection

            opened.append(PgConnection(store.url))
        else:
            opened.append(sqlite3.connect(store.root / "store.sqlite", isolation_level=None))
        return opened[-1]

    yield connect
    for connection in opened:
        connection.close()


def integrity_error(store) -> type[Exception]:
    """The exception a constraint or lock trigger raises on this store's backend."""
    import sqlite3

    if store.folder is None:
        import psycopg

        return psycopg.errors.IntegrityError
    return sqlite3.IntegrityError


def pytest_generate_tests(metafunc):
    """Run a module's store tests on each backend it lists in ``STORE_BACKENDS`` (default: SQLite only).

    The fixture given the backend is ``store``, or those the module names in ``BACKEND_FIXTURES``
    (they read it as ``request.param``). Tests marked ``sqlite_only`` run on SQLite alone.
    """
    backends = getattr(metafunc.module, "STORE_BACKENDS", None)
    if not backends or metafunc.definition.get_closest_marker("sqlite_only"):
        return
    for name in getattr(metafunc.module, "BACKEND_FIXTURES", ("store",)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, backends, indirect=True)
            return


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session (Debian postgresql, loopback, a free port), stopped at the end.

    Skipped only on a machine without the server binaries; ``sh dev test`` installs them and sets
    CNO_REQUIRE_POSTGRESQL, so in CI a missing server fails instead.
    """
    from cno_annotate.store import pg_local

    if pg_local.server_binaries() is None:
        message = "PostgreSQL server binaries not found (Debian: apt-get install postgresql; sh dev test does it)"
        if os.environ.get("CNO_REQUIRE_POSTGRESQL"):
            pytest.fail(message)
        pytest.skip(message)
    server = pg_local.start(durable=False)
    previous = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(server.passfile)  # URLs without passwords: store.root reopens the store
    yield server
    server.stop()
    if previous is None:
        os.environ.pop("PGPASSFILE", None)
    else:
        os.environ["PGPASSFILE"] = previous


@pytest.fixture(scope="session")
def pg_template(pg_server) -> str:
    """A database migrated once, copied for every test (CREATE DATABASE ... TEMPLATE is quick)."""
    Store.open(pg_server.create_database("cno_template")).close()
    return "cno_template"


@pytest.fixture
def pg_database(pg_server, pg_template):
    """``pg_database()`` -> the owner's URL of a new, migrated, empty store database on the test server."""
    import psycopg
    from psycopg import sql

    def make(template: str = pg_template) -> str:
        name = f"store_{next(_DATABASES)}"
        with psycopg.connect(pg_server.url(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        return pg_server.plain_url(name)

    return make


#: The reading study every PostgreSQL test of several sessions works on (see ``trial_database``).
TRIAL_READERS = ("dr-a", "dr-b")
TRIAL_ADJUDICATOR = "dr-adj"


@pytest.fixture(scope="session")
def trial_template(pg_server, pg_template, tmp_path_factory) -> str:
    """A template database, built once per session: reading study 'trial' on three imported studies, assigned
    to readers dr-a and dr-b and adjudicator dr-adj (seed 7), with their server logins granted."""
    from cno_annotate import reading_study as rs
    from tests.cli_run import run_cli

    studies = tmp_path_factory.mktemp("trial-studies")
    for seed in range(3):
        generate_study(studies / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=40 + seed))
    url = pg_server.create_database("trial_template")
    store = Store.open(url)
    import_paths(store, [studies])
    rs.create(store, "trial", seed=7)
    rs.add_cases(store, "trial", sorted(store.study_uids()))
    rs.add_readers(store, "trial", list(TRIAL_READERS))
    rs.add_readers(store, "trial", [TRIAL_ADJUDICATOR], role="adjudicator")
    rs.assign(store, "trial")
    store.close()
    for flag, login in [("--reader", r) for r in TRIAL_READERS] + [("--adjudicator", TRIAL_ADJUDICATOR)]:
        code, out = run_cli("store", "grant", flag, login, "--store", url)
        assert code == 0, out
        if "password (shown once): " in out:  # roles belong to the server: made once per session
            pg_server.remember(login, out.rsplit(": ", 1)[1].strip())
    return "trial_template"


@pytest.fixture
def trial_database(pg_server, pg_database, trial_template):
    """``trial_database(login)`` -> the URL of this test's own copy of the trial database, as that login
    (the owner by default)."""
    database = pg_database(trial_template).rsplit("/", 1)[1]
    return lambda login="cno_owner": pg_server.plain_url(database, user=login)


@pytest.fixture
def copy_tree(tmp_path):
    """Copy a folder into the test's temporary folder."""

    def copy(source: Path, name: str = "copy") -> Path:
        target = tmp_path / name
        shutil.copytree(source, target)
        return target

    return copy


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def open_viewer(qtbot, tmp_path, sample_store):
    """Open the main window on a copy of the sample store, with the sample study loaded."""
    from cno_annotate_ui.main_window import MainWindow

    def open_window(reader: str | None = None, size=(1200, 800)):
        store_dir = tmp_path / "viewer-store"
        shutil.copytree(sample_store.root, store_dir)
        window = MainWindow(store_dir, reader=reader)
        window.resize(*size)
        qtbot.addWidget(window)
        window.show()
        with qtbot.waitSignal(window.all_loaded, timeout=20000):
            window.select_study(window.store.studies()[0].study_uid)
        return window

    return open_window

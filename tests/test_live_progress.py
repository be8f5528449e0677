"""Live reading progress on a real PostgreSQL server: the database notifies, the listener and the viewer follow.

One server for the session (conftest.pg_server); a reading study is built once into a template database
and each test works on its own copy. The second program is a second session of the server, as another
reader's machine (or the same reader in a second window) would be.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from cno_annotate.store.live import ProgressListener, ReadStatusChanged, WorklistChanged, listener_for
from tests.cli_run import run_cli

#: Seconds a test waits for a notification that must come (a deadline, not a measured time).
ARRIVES = 20.0



@pytest.fixture(scope="module")
def live_template(pg_server, pg_template, tmp_path_factory) -> str:
    """A database with reading study 'live': three studies, readers dr-la and dr-lb, logins granted."""
    studies = tmp_path_factory.mktemp("live-studies")
    for seed in range(3):
        generate_study(studies / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=60 + seed))
    url = pg_server.create_database("live_template")
    store = Store.open(url)
    import_paths(store, [studies])
    rs.create(store, "live", seed=5)
    rs.add_cases(store, "live", sorted(store.study_uids()))
    rs.add_readers(store, "live", ["dr-la", "dr-lb"])
    rs.assign(store, "live")
    store.close()
    for login in ("dr-la", "dr-lb"):
        code, out = run_cli("store", "grant", "--reader", login, "--store", url)
        assert code == 0, out
        if "password (shown once): " in out:
            pg_server.remember(login, out.rsplit(": ", 1)[1].strip())
    return "live_template"


@pytest.fixture
def live(pg_server, pg_database, live_template):
    """``live(login)`` -> the URL of this test's copy of the study database for that login."""
    database = pg_database(live_template).rsplit("/", 1)[1]
    return lambda login="cno_owner": pg_server.plain_url(database, user=login)


def _submit(url: str, reader: str, code: str) -> None:
    """Another program: open the reader's read of a case, mark a lesion, submit, close."""
    store = Store.open(url)
    try:
        session = ReadSession.open_or_create(store, rs.study_uid_of(store, "live", code), reader, reading_study="live")
        session.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
        session.submit()
    finally:
        store.close()


def _events_until(listener: ProgressListener, wanted) -> list:
    """Every event until one satisfies ``wanted`` (or the deadline passes)."""
    seen: list = []
    for _ in range(5):
        seen += listener.wait(ARRIVES)
        if any(wanted(e) for e in seen):
            break
    return seen


def test_a_read_submitted_by_another_session_reaches_the_listener_as_typed_events(live):
    listener = ProgressListener(live("dr-la"))
    try:
        assert listener.pending() == []
        code = rs.worklist(Store.open(live("dr-la")), "live", "dr-la")[0]["reading_code"]
        _submit(live("dr-la"), "dr-la", code)
        seen = _events_until(listener, lambda e: e == ReadStatusChanged("live", code, "dr-la", "submitted"))
        assert ReadStatusChanged("live", code, "dr-la", "submitted") in seen
    finally:
        listener.close()


def test_a_reader_hears_nothing_of_another_readers_reads_and_the_coordinator_hears_all(live):
    reader, coordinator = ProgressListener(live("dr-la")), ProgressListener(live())
    try:
        code = rs.worklist(Store.open(live("dr-lb")), "live", "dr-lb")[0]["reading_code"]
        _submit(live("dr-lb"), "dr-lb", code)
        assert ReadStatusChanged("live", code, "dr-lb", "submitted") in _events_until(
            coordinator, lambda e: e.reading_study == "live" and getattr(e, "status", "") == "submitted")
        # the reader's session received the same notifications: none of them is an event for dr-la
        assert [e for e in reader.wait(ARRIVES) + reader.pending() if isinstance(e, ReadStatusChanged)] == []
    finally:
        reader.close()
        coordinator.close()


def test_a_new_assignment_is_a_worklist_event(live):
    listener = ProgressListener(live("dr-la"))
    try:
        owner = Store.open(live())
        rs.add_readers(owner, "live", ["dr-lc"])
        rs.assign(owner, "live")
        owner.close()
        assert WorklistChanged("live") in _events_until(listener, lambda e: isinstance(e, WorklistChanged))
    finally:
        listener.close()


def test_an_sqlite_store_has_no_listener(tmp_path):
    assert listener_for(Store.open(tmp_path / "store")) is None


def _visible_rows(window) -> list[str]:
    return [window.study_list.item(n).text() for n in range(window.study_list.count())
            if not window.study_list.item(n).isHidden()]


def test_the_viewers_worklist_repaints_a_read_submitted_elsewhere(live, qtbot, tmp_path):
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(live("dr-la"), reader="dr-la", reading_study="live")
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    qtbot.waitExposed(window)
    rows = _visible_rows(window)
    code = rows[1].split()[1]  # not the first row: nothing is open, nothing selected
    assert rows[1].endswith("not started")
    before = window.study_list.viewport().grab().toImage()
    _submit(live("dr-la"), "dr-la", code)  # the same reader in another window (another session)
    qtbot.waitUntil(lambda: _visible_rows(window)[1].endswith("submitted"), timeout=int(ARRIVES * 1000))
    window.study_list.viewport().repaint()
    after = window.study_list.viewport().grab().toImage()
    after.save(str(tmp_path / "worklist-after.png"))
    assert after != before  # the painted list changed, not only the model behind it
    assert _visible_rows(window)[1] == rows[1].replace("not started", "submitted")
    assert [r for n, r in enumerate(_visible_rows(window)) if n != 1] == [r for n, r in enumerate(rows) if n != 1]
    window.close()


def test_a_readers_window_without_a_study_pacs_says_where_the_images_are(live, qtbot):
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(live("dr-la"), reader="dr-la", reading_study="live")
    qtbot.addWidget(window)
    window.show()
    assert window.open_next_case()
    assert "on the study PACS: open the viewer with --pacs NODE" in window.statusBar().currentMessage()
    window.close()


def test_view_with_an_unknown_study_pacs_is_refused_before_the_window_opens(live, cli):
    code, out, err = cli("view", "--store", live("dr-la"), "--reader", "dr-la", "--reading-study", "live",
                         "--pacs", "nowhere", "--screenshot", "shot.png")
    assert code != 0 and "nowhere" in err and "pacs add" in err


def test_a_screenshot_of_a_case_the_study_pacs_cannot_deliver_is_written_not_waited_for(live, tmp_path, monkeypatch):
    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "config"))  # this test's own nodes
    assert run_cli("pacs", "add", "study-pacs", "--dicomweb", "http://127.0.0.1:9/dicom-web")[0] == 0
    shot = tmp_path / "shot.png"
    # its own process, as a user runs it (the window runs the application's event loop until it quits)
    result = subprocess.run([sys.executable, "-m", "cno_annotate", "view", "--store", live("dr-la"), "--reader",
                             "dr-la", "--reading-study", "live", "--pacs", "study-pacs", "--screenshot", str(shot)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    assert shot.is_file() and "wrote" in result.stdout


def test_a_dropped_listening_session_is_opened_again_and_the_worklist_catches_up(live, pg_server, qtbot):
    """The listener's backend is terminated; a read submitted meanwhile still shows, and later ones live."""
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(live("dr-la"), reader="dr-la", reading_study="live")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    rows = _visible_rows(window)
    first, second = rows[1].split()[1], rows[2].split()[1]
    owner = Store.open(live())
    try:
        owner.db.execute("SELECT pg_terminate_backend(?)", (window.live.listener._connection.info.backend_pid,))
    finally:
        owner.close()
    _submit(live("dr-la"), "dr-la", first)  # sent while nobody listened for this window
    with qtbot.waitSignal(window.live.reconnected, timeout=int(ARRIVES * 1000)):
        pass
    qtbot.waitUntil(lambda: _visible_rows(window)[1].endswith("submitted"), timeout=int(ARRIVES * 1000))
    _submit(live("dr-la"), "dr-la", second)  # the new session hears this one
    qtbot.waitUntil(lambda: _visible_rows(window)[2].endswith("submitted"), timeout=int(ARRIVES * 1000))
    window.close()

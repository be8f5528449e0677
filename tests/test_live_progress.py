"""Live reading progress on a real PostgreSQL server: the database notifies, the listener and the viewer follow.

One server for the session (conftest.pg_server); the reading study is built once into a template database
(conftest.trial_template, shared with the other server tests)
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
from cno_annotate.store import Store
from cno_annotate.store.live import CaseOpened, ProgressListener, ReadStatusChanged, WorklistChanged, listener_for
from tests.cli_run import run_cli

#: Seconds a test waits for a notification that must come (a deadline, not a measured time).
ARRIVES = 20.0



@pytest.fixture
def live(trial_database):
    """``live(login)`` -> the URL of this test's copy of the trial database (conftest) for that login."""
    return trial_database


def _submit(url: str, reader: str, code: str) -> None:
    """Another program: open the reader's read of a case, mark a lesion, submit, close."""
    store = Store.open(url)
    try:
        session = ReadSession.open_or_create(store, rs.study_uid_of(store, "trial", code), reader, reading_study="trial")
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
    listener = ProgressListener(live("dr-a"))
    try:
        assert listener.pending() == []
        code = rs.worklist(Store.open(live("dr-a")), "trial", "dr-a")[0]["reading_code"]
        _submit(live("dr-a"), "dr-a", code)
        seen = _events_until(listener, lambda e: e == ReadStatusChanged("trial", code, "dr-a", "submitted"))
        assert ReadStatusChanged("trial", code, "dr-a", "submitted") in seen
    finally:
        listener.close()


def test_a_reader_hears_nothing_of_another_readers_reads_and_the_coordinator_hears_all(live):
    reader, coordinator = ProgressListener(live("dr-a")), ProgressListener(live())
    try:
        code = rs.worklist(Store.open(live("dr-b")), "trial", "dr-b")[0]["reading_code"]
        _submit(live("dr-b"), "dr-b", code)
        assert ReadStatusChanged("trial", code, "dr-b", "submitted") in _events_until(
            coordinator, lambda e: e.reading_study == "trial" and getattr(e, "status", "") == "submitted")
        # the reader's session received the same notifications: none of them is an event for dr-a
        assert [e for e in reader.wait(ARRIVES) + reader.pending() if isinstance(e, ReadStatusChanged)] == []
    finally:
        reader.close()
        coordinator.close()


def test_a_new_assignment_is_a_worklist_event(live):
    listener = ProgressListener(live("dr-a"))
    try:
        owner = Store.open(live())
        rs.add_readers(owner, "trial", ["dr-lc"])
        rs.assign(owner, "trial")
        owner.close()
        assert WorklistChanged("trial") in _events_until(listener, lambda e: isinstance(e, WorklistChanged))
    finally:
        listener.close()


def _open_only(url: str, reader: str, code: str) -> None:
    """Another program: the reader opens a case and looks at it, changing nothing, and closes."""
    store = Store.open(url)
    try:
        session = ReadSession.open_or_create(store, rs.study_uid_of(store, "trial", code), reader, reading_study="trial")
        session.add_reading_time(4.0)
    finally:
        store.close()


def test_a_case_opened_elsewhere_reaches_the_coordinator_and_that_reader_only(live):
    coordinator, reader, other = (ProgressListener(live(login)) for login in ("cno_owner", "dr-a", "dr-b"))
    try:
        first, second = (e["reading_code"] for e in rs.worklist(Store.open(live("dr-a")), "trial", "dr-a")[:2])
        _open_only(live("dr-a"), "dr-a", first)
        opened = CaseOpened("trial", first, "dr-a")
        assert opened in _events_until(coordinator, lambda e: e == opened)
        assert opened in _events_until(reader, lambda e: e == opened)  # the reader's other windows
        theirs = CaseOpened("trial", rs.worklist(Store.open(live("dr-b")), "trial", "dr-b")[0]["reading_code"], "dr-b")
        _open_only(live("dr-b"), "dr-b", theirs.reading_code)  # announced after dr-a's (commit order)
        assert [e for e in _events_until(other, lambda e: e == theirs) if isinstance(e, CaseOpened)] == [theirs]
        _open_only(live("dr-a"), "dr-a", first)  # opened again: nothing new to announce
        _open_only(live("dr-a"), "dr-a", second)
        later = _events_until(coordinator, lambda e: e == CaseOpened("trial", second, "dr-a"))
        assert opened not in later and CaseOpened("trial", second, "dr-a") in later
        progress = next(p for p in rs.progress(Store.open(live()), "trial") if p["reader"] == "dr-a")
        assert progress["opened"] == 2
    finally:
        for listener in (coordinator, reader, other):
            listener.close()


def test_the_viewers_worklist_repaints_a_case_opened_in_another_window(live, qtbot):
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(live("dr-a"), reader="dr-a", reading_study="trial")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    rows = _visible_rows(window)
    code = rows[1].split()[1]
    assert rows[1].endswith("not started")
    _open_only(live("dr-a"), "dr-a", code)  # the same reader in another window (another session)
    qtbot.waitUntil(lambda: _visible_rows(window)[1].endswith("opened"), timeout=int(ARRIVES * 1000))
    assert _visible_rows(window)[1] == rows[1].replace("not started", "opened")
    window.close()


def test_an_sqlite_store_has_no_listener(tmp_path):
    assert listener_for(Store.open(tmp_path / "store")) is None


def _visible_rows(window) -> list[str]:
    return [window.study_list.item(n).text() for n in range(window.study_list.count())
            if not window.study_list.item(n).isHidden()]


def test_the_viewers_worklist_repaints_a_read_submitted_elsewhere(live, qtbot, tmp_path):
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(live("dr-a"), reader="dr-a", reading_study="trial")
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    qtbot.waitExposed(window)
    rows = _visible_rows(window)
    code = rows[1].split()[1]  # not the first row: nothing is open, nothing selected
    assert rows[1].endswith("not started")
    before = window.study_list.viewport().grab().toImage()
    _submit(live("dr-a"), "dr-a", code)  # the same reader in another window (another session)
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

    window = MainWindow(live("dr-a"), reader="dr-a", reading_study="trial")
    qtbot.addWidget(window)
    window.show()
    assert window.open_next_case()
    assert "on the study PACS: open the viewer with --pacs NODE" in window.statusBar().currentMessage()
    window.close()


def test_view_with_an_unknown_study_pacs_is_refused_before_the_window_opens(live, cli):
    code, out, err = cli("view", "--store", live("dr-a"), "--reader", "dr-a", "--reading-study", "trial",
                         "--pacs", "nowhere", "--screenshot", "shot.png")
    assert code != 0 and "nowhere" in err and "pacs add" in err


def test_a_screenshot_of_a_case_the_study_pacs_cannot_deliver_is_written_not_waited_for(live, tmp_path, monkeypatch):
    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "config"))  # this test's own nodes
    assert run_cli("pacs", "add", "study-pacs", "--dicomweb", "http://127.0.0.1:9/dicom-web")[0] == 0
    shot = tmp_path / "shot.png"
    # its own process, as a user runs it (the window runs the application's event loop until it quits)
    result = subprocess.run([sys.executable, "-m", "cno_annotate", "view", "--store", live("dr-a"), "--reader",
                             "dr-a", "--reading-study", "trial", "--pacs", "study-pacs", "--screenshot", str(shot)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    assert shot.is_file() and "wrote" in result.stdout


def test_a_case_the_study_pacs_cannot_deliver_says_so_in_the_views(live, tmp_path, monkeypatch, qtbot):
    """The reason was a 15-s status message; then the views said only "No series selected" (issue-16 trial)."""
    from cno_annotate_ui.main_window import MainWindow

    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "config"))  # this test's own nodes
    assert run_cli("pacs", "add", "study-pacs", "--dicomweb", "http://127.0.0.1:9/dicom-web")[0] == 0
    window = MainWindow(live("dr-a"), reader="dr-a", reading_study="trial", pacs="study-pacs")
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.fetcher.failed, timeout=int(ARRIVES * 1000)):
        window.open_next_case()
    messages = [window.session.views[name].message for name in ("left", "right")]
    assert all(m.startswith(f"Cannot fetch {window.current_code} from the study PACS") and "try again" in m
               for m in messages), messages
    window.close()


def test_a_dropped_listening_session_is_opened_again_and_the_worklist_catches_up(live, pg_server, qtbot):
    """The listener's backend is terminated; a read submitted meanwhile still shows, and later ones live."""
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(live("dr-a"), reader="dr-a", reading_study="trial")
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
    _submit(live("dr-a"), "dr-a", first)  # sent while nobody listened for this window
    with qtbot.waitSignal(window.live.reconnected, timeout=int(ARRIVES * 1000)):
        pass
    qtbot.waitUntil(lambda: _visible_rows(window)[1].endswith("submitted"), timeout=int(ARRIVES * 1000))
    _submit(live("dr-a"), "dr-a", second)  # the new session hears this one
    qtbot.waitUntil(lambda: _visible_rows(window)[2].endswith("submitted"), timeout=int(ARRIVES * 1000))
    window.close()


def test_live_updates_come_back_when_the_server_lets_the_window_listen_again(live, qtbot):
    """The server was unreachable for a moment (issue-16 trial: a killed server): live updates stopped for good.

    Here the reader's login may not connect while its listening session is ended; the window says
    live updates stopped (naming the server without its connection options), keeps trying, and
    listens again once the login may connect: a read submitted then repaints the worklist.
    """
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(live("dr-a") + "?connect_timeout=9", reader="dr-a", reading_study="trial")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    code = _visible_rows(window)[1].split()[1]
    owner = Store.open(live())
    try:
        owner.db.execute('ALTER ROLE "dr-a" NOLOGIN')
        try:
            with qtbot.waitSignal(window.live.lost, timeout=int(ARRIVES * 1000)) as lost:
                owner.db.execute("SELECT pg_terminate_backend(?)", (window.live.listener._connection.info.backend_pid,))
        finally:
            owner.db.execute('ALTER ROLE "dr-a" LOGIN')
        message = lost.args[0]
        assert message.startswith("Live updates stopped") and "connect_timeout" not in message, message
        with qtbot.waitSignal(window.live.reconnected, timeout=int(ARRIVES * 1000)):
            pass
        assert window.statusBar().currentMessage() == "Live updates resumed"
    finally:
        owner.close()
    _submit(live("dr-a"), "dr-a", code)
    qtbot.waitUntil(lambda: _visible_rows(window)[1].endswith("submitted"), timeout=int(ARRIVES * 1000))
    window.close()

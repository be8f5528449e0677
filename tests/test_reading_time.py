"""Active reading time: the timer on a fake clock (no sleeps), storage with the read, progress and exports."""

from __future__ import annotations

import csv
import json

import pytest

from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.annotation.timing import ActiveTimer
from tests.conftest import integrity_error

STORE_BACKENDS = ("sqlite", "postgresql")
STUDY = "1.2.826.0.1.3680043.99.1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_inputs_within_the_idle_limit_count_in_full():
    clock = FakeClock()
    timer = ActiveTimer(idle_limit=30, clock=clock)
    timer.activity()
    for _ in range(10):
        clock.advance(5)
        timer.activity()
    assert timer.take() == pytest.approx(50)
    assert timer.take() == 0


def test_an_idle_spell_longer_than_the_limit_adds_the_limit_then_pauses():
    clock = FakeClock()
    timer = ActiveTimer(idle_limit=30, clock=clock)
    timer.activity()
    clock.advance(10)
    timer.activity()  # 10 s
    clock.advance(600)  # the reader left
    assert not timer.running
    assert timer.elapsed() == pytest.approx(40)  # 10 + the 30 s before the timer paused
    timer.activity()  # back: restarts, the 600 s are not counted
    clock.advance(4)
    timer.activity()
    assert timer.take() == pytest.approx(44)


def test_autosaves_taking_the_time_do_not_restart_the_idle_limit():
    """The viewer takes the time every 20 s (autosave); a reader idle for 150 s adds only the limit."""
    clock = FakeClock()
    timer = ActiveTimer(idle_limit=60, clock=clock)
    timer.activity()
    taken = 0.0
    for _ in range(7):  # 140 s without any input, an autosave every 20 s
        clock.advance(20)
        taken += timer.take()
    clock.advance(10)
    assert taken + timer.take() == pytest.approx(60)
    assert not timer.running and timer.elapsed() == pytest.approx(60)
    timer.activity()  # back: the idle spell is not counted, the next inputs are
    clock.advance(5)
    timer.activity()
    assert timer.take() == pytest.approx(5)


def test_losing_the_focus_pauses_at_once_and_regaining_it_restarts():
    clock = FakeClock()
    timer = ActiveTimer(idle_limit=60, clock=clock)
    timer.activity()
    clock.advance(7)
    timer.focus_changed(False)  # another program: 7 s counted, then nothing
    clock.advance(45)
    timer.activity()  # input to another window does not count
    assert timer.elapsed() == pytest.approx(7)
    timer.focus_changed(True)
    clock.advance(3)
    timer.activity()
    assert timer.take() == pytest.approx(10)


def test_a_pause_stops_counting_until_the_next_input():
    clock = FakeClock()
    timer = ActiveTimer(idle_limit=60, clock=clock)
    timer.activity()
    clock.advance(2)
    timer.pause()
    clock.advance(20)
    assert timer.elapsed() == pytest.approx(2)


def test_the_idle_limit_must_be_positive():
    with pytest.raises(ValueError, match="more than 0"):
        ActiveTimer(idle_limit=0)


def test_reading_time_is_stored_with_the_read_and_only_added(store):
    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    session.add_reading_time(12.5)  # no read yet: kept until the first change creates it
    assert store.db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 0
    session.mark_unit("skull", "no_lesion")
    assert load_read(store, session.read.read_id).active_seconds == pytest.approx(12.5)
    session.add_reading_time(30)
    assert load_read(store, session.read.read_id).active_seconds == pytest.approx(42.5)
    revision = load_read(store, session.read.read_id).revision
    session.mark_unit("sacrum", "no_lesion")  # time never conflicts with edits: the revision is the edits'
    assert load_read(store, session.read.read_id).revision == revision + 1
    session.submit()
    session.add_reading_time(5)  # a submitted read is locked: its time is final, nothing is raised
    assert load_read(store, session.read.read_id).active_seconds == pytest.approx(42.5)


def test_the_database_refuses_time_on_a_submitted_read(store):
    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    session.mark_unit("skull", "no_lesion")
    session.add_reading_time(3)
    session.submit()
    with pytest.raises(integrity_error(store), match="locked"):
        with store.transaction() as db:
            db.execute("UPDATE read_times SET active_seconds = 0 WHERE read_id = ?", (session.read.read_id,))


def test_reading_time_in_the_json_and_csv_exports(store, tmp_path, cli):
    from cno_annotate.annotation.documents import export_document

    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    session.mark_unit("skull", "no_lesion")
    session.add_reading_time(61.25)
    document = export_document(store)
    assert document["schema_version"] == "1.2.0"
    assert document["reads"][0]["active_seconds"] == pytest.approx(61.2, abs=0.1)
    code, _, err = cli("--store", store.root, "export-csv", "--out", tmp_path / "csv")
    assert code == 0, err
    with open(tmp_path / "csv" / "reads.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["active_seconds"]) == pytest.approx(61.2, abs=0.1)
    with open(tmp_path / "csv" / "columns.csv", newline="") as f:
        described = {r["column"]: r["meaning"] for r in csv.DictReader(f) if r["file"] == "reads.csv"}
    assert "idle" in described["active_seconds"]
    json.dumps(document, allow_nan=False)


def test_progress_shows_each_readers_active_time_and_the_study_sets_the_timer(sample_copy, cli):
    from cno_annotate import reading_study as rs

    store = sample_copy()
    uid = store.studies()[0].study_uid
    code, out, err = cli("--store", store.root, "reading-study", "create", "trial", "--show-timer", "--idle-seconds", "90")
    assert code == 0, err
    study = rs.get(store, "trial")
    assert study.show_timer and study.idle_seconds == 90
    rs.add_cases(store, "trial", [uid])
    rs.add_readers(store, "trial", ["dr-a", "dr-b"])
    rs.assign(store, "trial")
    session = ReadSession.open_or_create(store, uid, "dr-a", reading_study="trial")
    session.add_reading_time(125)
    session.mark_remaining()
    session.submit()
    rows = {r["reader"]: r for r in rs.progress(store, "trial")}
    assert rows["dr-a"]["active_seconds"] == pytest.approx(125) and rows["dr-a"]["seconds_per_submitted"] == 125
    assert rows["dr-b"]["active_seconds"] == 0 and rows["dr-b"]["seconds_per_submitted"] is None
    code, out, err = cli("--store", store.root, "reading-study", "progress", "trial")
    assert "active 2 min 05 s (2 min 05 s per submitted case)" in out
    code, out, err = cli("--store", store.root, "reading-study", "create", "other", "--idle-seconds", "0")
    assert code != 0 and "above 0" in err and len(err.strip().splitlines()) == 1


def test_reading_time_survives_export_and_import_and_a_1_1_0_document_still_imports(sample_copy, tmp_path):
    from cno_annotate.annotation.documents import export_document, import_document, write_document
    from cno_annotate.errors import CnoError

    store = sample_copy("first")
    session = ReadSession.open_or_create(store, store.studies()[0].study_uid, "dr-a")
    session.add_reading_time(33.3)
    session.mark_unit("skull", "no_lesion")
    document = export_document(store)
    other = sample_copy("other")
    import_document(other, write_document(document, tmp_path / "reads.json"))
    assert export_document(other)["reads"] == document["reads"]
    assert load_read(other, session.read.read_id).active_seconds == pytest.approx(33.3)
    old = json.loads(json.dumps(document))
    old["schema_version"] = "1.1.0"
    with pytest.raises(CnoError, match="active_seconds"):  # 1.1.0 has no reading time
        import_document(sample_copy("third"), write_document(old, tmp_path / "old-bad.json"))
    del old["reads"][0]["active_seconds"], old["reads"][0]["rois"], old["reads"][0]["followup"]  # other 1.2.0 fields
    del old["reads"][0]["scores"]["complete"]
    for lesion in old["reads"][0]["lesions"]:
        lesion.pop("stir_muscle_ratio", None)
        lesion.pop("tracking_uid", None)
    third = sample_copy("fourth")
    import_document(third, write_document(old, tmp_path / "old.json"))
    assert load_read(third, session.read.read_id).active_seconds == 0


@pytest.mark.gui
def test_the_window_measures_active_time_from_real_input_and_hides_the_timer(open_viewer, qtbot):
    """Keys on the image count; an idle spell counts up to the limit; leaving the window pauses; saved with the read."""
    pytest.importorskip("PySide6")
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    window = open_viewer(reader="dr-test")
    assert not window.timer_label.isVisible()  # outside a study that shows it, the reader sees no timer
    clock = FakeClock()
    window.reading_timer = ActiveTimer(idle_limit=60, clock=clock)
    view = QApplication.focusWidget()
    assert view is window.active_view()
    qtbot.keyClick(view, Qt.Key_Down)
    for _ in range(4):
        clock.advance(10)
        qtbot.keyClick(view, Qt.Key_Down)  # 40 s of scrolling
    clock.advance(300)  # away from the desk: 60 s count, then the timer pauses
    qtbot.keyClick(view, Qt.Key_Up)
    clock.advance(5)
    window._application_state(Qt.ApplicationInactive)  # another program: paused at once (5 s counted)
    clock.advance(100)
    window._application_state(Qt.ApplicationActive)
    clock.advance(2)
    qtbot.keyClick(view, Qt.Key_Up)  # 2 s
    assert "1:47" in window.reading_time_text()  # shown only when a study enables it
    window.save_reading_time()  # no read yet: the time waits for the first change
    assert window.read_session.reading_time == pytest.approx(107)
    window.read_session.mark_unit("skull", "no_lesion")
    assert load_read(window.store, window.read_session.read.read_id).active_seconds == pytest.approx(107)
    window.close()


@pytest.mark.gui
@pytest.mark.parametrize("shown", [True, False])
def test_reader_mode_shows_the_timer_only_when_the_study_enables_it(sample_store, tmp_path, qtbot, shown):
    pytest.importorskip("PySide6")
    import shutil

    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate import reading_study as rs
    from cno_annotate.store import Store

    shutil.copytree(sample_store.root, tmp_path / "store")
    store = Store.open(tmp_path / "store")
    rs.create(store, "blind", show_timer=shown, idle_seconds=45)
    rs.add_cases(store, "blind", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "blind", ["dr-a"])
    rs.assign(store, "blind")
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-a", reading_study="blind")
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=30000):
        window.open_next_case()
    assert window.reading_timer.idle_limit == 45
    assert window.timer_label.isVisible() is shown
    if shown:
        qtbot.waitUntil(lambda: window.timer_label.text().startswith("Reading time"), timeout=3000)
    window.close()


@pytest.mark.gui
def test_a_case_only_looked_at_in_the_window_shows_as_opened_with_its_time(tmp_path, qtbot):
    """Open a case, scroll through it, go to the next case: progress says opened (not draft) with the time."""
    pytest.importorskip("PySide6")
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from cno_annotate import reading_study as rs
    from cno_annotate.importer import import_paths
    from cno_annotate.sample import StudyPlan, generate_study
    from cno_annotate.store import Store

    for seed in range(3):
        generate_study(tmp_path / "studies" / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=80 + seed))
    store = Store.open(tmp_path / "store")
    import_paths(store, [tmp_path / "studies"])
    rs.create(store, "blind", seed=4)
    rs.add_cases(store, "blind", sorted(store.study_uids()))
    rs.add_readers(store, "blind", ["dr-a"])
    rs.assign(store, "blind")
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-a", reading_study="blind")
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=30000):
        window.open_next_case()
    clock = FakeClock()
    window.reading_timer = ActiveTimer(idle_limit=60, clock=clock)
    view = QApplication.focusWidget()
    assert view is window.active_view()
    qtbot.keyClick(view, Qt.Key_Down)
    for _ in range(3):
        clock.advance(10)
        qtbot.keyClick(view, Qt.Key_Down)  # 30 s looking, no change
    with qtbot.waitSignal(window.all_loaded, timeout=30000):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key_N, Qt.ControlModifier)  # the next case
    other = Store.open(tmp_path / "store")
    (progress,) = rs.progress(other, "blind")
    assert (progress["not started"], progress["opened"], progress["draft"], progress["submitted"]) == (1, 2, 0, 0)
    assert progress["active_seconds"] == pytest.approx(30)
    assert other.db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 0
    statuses = [window.study_list.item(n).data(Qt.UserRole + 1) for n in range(window.study_list.count())]
    assert sorted(statuses) == ["not started", "opened", "opened"]
    other.close()
    window.close()


#: Runs the viewer as ``cno-annotate view`` does and prints the active time the window has measured, as it grows.
_VIEWER_REPORTING_TIME = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from cno_annotate_ui.app import run_viewer

app = QApplication(sys.argv[:1])

def report():
    for window in app.topLevelWidgets():
        if type(window).__name__ == "MainWindow" and window.read_session is not None and window.read_session.stored:
            print(f"measured {window.reading_timer.elapsed():.6f}", flush=True)

timer = QTimer()
timer.timeout.connect(report)
timer.start(20)
sys.exit(run_viewer(sys.argv[1], sys.argv[2], False, None, reader="dr-term"))
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_the_active_time_is_saved_when_the_viewer_is_terminated(sample_copy, tmp_path, signal_name):
    """SIGTERM (a logout, a shutdown, ``kill``) or SIGINT while a case is read: the viewer saves the active time it
    has measured before it exits. It was saved every 20 s only, so up to 20 s of reading were lost.

    The viewer runs offscreen in a subprocess that prints what its timer has measured; after the signal the
    store holds at least the last figure printed (added to what the read had before).
    """
    pytest.importorskip("PySide6", reason="the viewer needs the ui extra")
    import os
    import signal
    import subprocess
    import sys

    store = sample_copy("terminated")
    study = store.studies()[0].study_uid
    session = ReadSession.open_or_create(store, study, "dr-term")
    session.mark_unit("skull", "no_lesion")  # a stored read, to take the time
    session.add_reading_time(7.0)
    read_id = session.read.read_id
    before = load_read(store, read_id).active_seconds
    script = tmp_path / "viewer.py"
    script.write_text(_VIEWER_REPORTING_TIME)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    viewer = subprocess.Popen([sys.executable, str(script), str(store.root), study], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    measured = 0.0
    try:
        assert viewer.stdout is not None
        for line in viewer.stdout:
            measured = float(line.split()[1])
            if measured > 0:
                break
        viewer.send_signal(getattr(signal, signal_name))
        _, errors = viewer.communicate(timeout=60)
    finally:
        viewer.kill()
    assert measured > 0, errors
    assert viewer.returncode == -getattr(signal, signal_name), errors  # it still ends as the signal asks
    saved = load_read(store, read_id).active_seconds
    assert saved - before >= measured, (before, measured, saved)

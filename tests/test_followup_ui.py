"""Prior beside current in the real window: linked views, background registration, nudges, ghosts."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from cno_annotate import followup
from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.importer import import_paths
from cno_annotate.store import Store
from tests.followup_data import visits
from tests.test_followup import _Piecewise
from tests.test_reading_study import _visible_strings

pytestmark = pytest.mark.gui
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="module")
def visit_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-visits")
    return root, visits(root)


def _stir(store, study_uid):
    return next(v.volume_id for v in store.volumes(study_uid) if v.kind == "composed" and v.role == "STIR")


def _prepared(tmp_path, visit_dirs, design: str) -> tuple[Path, dict]:
    """A reading study of the three studies; dr-a has submitted the baseline (two lesions) and the other case."""
    root, uids = visit_dirs
    store = Store.open(tmp_path / "store")
    import_paths(store, [root])
    rs.create(store, "fu", seed=5, design=design)
    rs.add_cases(store, "fu", list(uids.values()))
    rs.add_readers(store, "fu", ["dr-a"])
    rs.assign(store, "fu")
    for key in ("baseline", "other"):
        session = ReadSession.open_or_create(store, uids[key], "dr-a", reading_study="fu")
        volume = _stir(store, uids[key])
        session.add_lesion((-40.0, 0.0, -300.0), volume, (1, 1, 1), site_id="femur.distal", side="R")
        session.add_lesion((30.0, 0.0, -200.0), volume, (1, 1, 1), site_id="ilium", side="L")
        session.submit()
    store.close()
    return tmp_path / "store", uids


@pytest.fixture
def held_registration(monkeypatch):
    """The registration runs in the background and ends only when the test releases it."""
    release = threading.Event()
    transform = _Piecewise({"right_leg": (0.0, 0.0, 10.0), "left_leg": (0.0, 0.0, 10.0)})
    saved = []

    def registration_between(store, prior, current, progress=None, same_patient=False):
        assert release.wait(30)
        return transform

    monkeypatch.setattr(followup, "registration_between", registration_between)
    monkeypatch.setattr(followup, "save_transform", lambda store, t: saved.append(t))
    return release, saved


def _focused():
    from PySide6.QtWidgets import QApplication

    return QApplication.focusWidget()


def _open(qtbot, store_root):
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(store_root, reader="dr-a", reading_study="fu")
    window.resize(1400, 850)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def test_prior_beside_current_links_views_through_the_registration_and_carries_lesions(qtbot, tmp_path, visit_dirs,
                                                                                       held_registration):
    from PySide6.QtCore import QPoint, Qt

    release, saved = held_registration
    store_root, uids = _prepared(tmp_path, visit_dirs, "paired-chronological")
    window = _open(qtbot, store_root)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()  # the next case not submitted: the follow-up
    assert _focused() is window.active_view()  # where the keyboard lands  # the next case not submitted: the follow-up
    assert rs.study_uid_of(window.store, "fu", window.current_code) == uids["followup"]
    assert window.comparison.action.isEnabled() and window.comparison.prior_box.count() == 1
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        qtbot.keyClick(_focused(), Qt.Key_P, Qt.ControlModifier)
    left, right = window.session.views["left"], window.session.views["right"]
    assert left.volume.volume_id == _stir(window.store, uids["baseline"])
    assert right.volume.volume_id == _stir(window.store, uids["followup"])
    assert "computing" in window.comparison.region_label.text()  # still registering, and the views work:
    view = window.panels["right"].view
    before = left.slice_index
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.rect().center())
    qtbot.keyClick(view, Qt.Key_Down)
    np.testing.assert_allclose(left.point, right.point)  # linked by patient coordinates meanwhile
    assert left.slice_index == before + 1 or left.slice_index == right.slice_index
    with qtbot.waitSignal(window.comparison.registered, timeout=30000):
        release.set()
    assert window.session.region.replace("_", " ") in window.comparison.region_label.text()
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.rect().center() + QPoint(-60, 40))
    np.testing.assert_allclose(left.point, right.point - (0.0, 0.0, 10.0))  # through the inverse transform
    region = window.session.region
    assert region in window.comparison.region_label.text().replace(" ", "_")
    qtbot.keyClick(_focused(), Qt.Key_Up, Qt.AltModifier)  # nudge the region in use by 1 mm
    np.testing.assert_allclose(left.point, right.point - (0.0, 0.0, 11.0))
    assert saved and "nudged" in window.comparison.region_label.text()
    # the prior read's lesions: ghosts on the current views, confirmed from the dock
    comparison = window.comparison
    assert comparison.dock.isVisible() and comparison.ghost_list.count() == 2
    assert len(window.session.prior_markers) == 2 and len(window.extra_markers) == 2
    rows = sorted(comparison.ghost_list.item(n).text().rsplit(": ", 1)[0] for n in range(2))
    assert rows == sorted(m.label.removesuffix(" ?") for m in window.extra_markers)  # the site as on the image
    prior = followup.prior_read_of(window.store, uids["baseline"], "dr-a", "fu")
    qtbot.mouseClick(comparison.ghost_list.viewport(), Qt.LeftButton,
                     pos=comparison.ghost_list.visualItemRect(comparison.ghost_list.item(0)).center())
    qtbot.mouseClick(comparison.outcome_buttons["persisting"], Qt.LeftButton)
    qtbot.mouseClick(comparison.ghost_list.viewport(), Qt.LeftButton,
                     pos=comparison.ghost_list.visualItemRect(comparison.ghost_list.item(1)).center())
    qtbot.mouseClick(comparison.outcome_buttons["resolved"], Qt.LeftButton)
    read = load_read(window.store, window.read_session.read.read_id)
    [lesion] = read.lesions
    assert lesion.tracking_uid == prior.lesions[0].tracking_uid and lesion.site_id == "femur.distal"
    assert read.followup.prior_read_id == prior.read_id
    assert "unconfirmed 0" in comparison.counts.text() and window.extra_markers == []
    window.grab().save(str(tmp_path / "followup.png"))  # docs/followup.png is this picture


def test_worklist_rows_read_whole_in_a_1400_pixel_window(qtbot, tmp_path, visit_dirs):
    """Each worklist row's lines fit the list (the follow-up picture's rows wrapped mid-text at 1400 px:
    "2. CNO-0002  draft  (P-001 tp" then "2/2)"): the case and its status on one line, the patient's
    timepoint on a line of its own, each within the row's width."""
    store_root, _ = _prepared(tmp_path, visit_dirs, "paired-chronological")
    window = _open(qtbot, store_root)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    qtbot.wait(50)
    rows = window.study_list
    metrics = rows.fontMetrics()
    cut = []
    for n in range(rows.count()):
        item = rows.item(n)
        room = rows.visualItemRect(item).width() - 8  # the style's text margins
        cut += [line for line in item.text().split("\n") if metrics.horizontalAdvance(line) > room]
        assert "tp " in item.text() and item.toolTip() == item.text()
    window.grab().save(str(tmp_path / "worklist-1400.png"))
    assert cut == [], (cut, rows.viewport().width())
    window.loader.wait(5000)


def test_hidden_order_window_never_says_which_visit_is_earlier(qtbot, tmp_path, visit_dirs, held_registration):
    from PySide6.QtCore import Qt

    release, _ = held_registration
    release.set()
    store_root, uids = _prepared(tmp_path, visit_dirs, "paired-hidden-order")
    window = _open(qtbot, store_root)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    with qtbot.waitSignal(window.comparison.registered, timeout=30000):
        qtbot.keyClick(_focused(), Qt.Key_P, Qt.ControlModifier)
    window.loader.wait(20000)
    qtbot.wait(50)
    texts = _visible_strings(window) + [window.comparison.region_label.text()]
    tags = [p.tag.text() for p in window.panels.values() if p.tag.text()]
    assert any("visit A" in t for t in tags) and any("visit B" in t for t in tags)
    for text in texts:
        for hint in ("2019", "2018", "timepoint", "prior", "earlier", "later", "baseline", "follow-up"):
            assert not re.search(rf"\b{hint}\b", text.lower()), (hint, text)
    dock = window.comparison.dock
    assert dock is None or not dock.isVisible()  # nothing is carried forward without a known order
    window.grab().save(str(tmp_path / "hidden.png"))


def test_hidden_order_worklist_in_the_window_shows_visit_letters_as_the_cli_does(qtbot, tmp_path, visit_dirs, cli):
    store_root, uids = _prepared(tmp_path, visit_dirs, "paired-hidden-order")
    window = _open(qtbot, store_root)
    rows = [window.study_list.item(n).text() for n in range(window.study_list.count())]
    entries = rs.worklist(window.store, "fu", "dr-a")
    code, out, _ = cli("--store", str(store_root), "reading-study", "worklist", "fu", "--reader", "dr-a")
    assert code == 0
    for entry, row in zip(entries, rows, strict=True):
        assert entry["reading_code"] in row
        assert f"{entry['patient_code']} visit {entry['visit']} of {entry['visits']}" in row, row
        assert f"visit {entry['visit']}" in out  # the same letter the CLI prints
    pair = [e["visit"] for e in entries if e["visits"] == 2]
    assert sorted(pair) == ["A", "B"]  # the two visits of one patient, by letter only
    for row in rows:
        assert not re.search(r"\b(tp|timepoint|prior|earlier|baseline)\b", row.lower()), row


@pytest.fixture(scope="module")
def repositioned(tmp_path_factory):
    """Two visits of one patient from the generator (repositioned trunk and limbs), imported once."""
    from cno_annotate.sample import StudyPlan, generate_study

    root = tmp_path_factory.mktemp("repositioned")
    truth = generate_study(root / "study", StudyPlan(stations=2, slices=8, matrix=48, seed=7, timepoints=2))
    store = Store.open(root / "store")
    import_paths(store, [root / "study"])
    store.close()
    return root / "store", [v["study_uid"] for v in truth["visits"]]


def test_with_the_real_registration_a_click_maps_through_it_and_a_nudge_is_kept(qtbot, tmp_path, repositioned):
    import shutil

    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import QPoint, Qt

    from cno_annotate.registration import transform_between

    source, (first, second) = repositioned
    shutil.copytree(source, tmp_path / "store")
    window = MainWindow(tmp_path / "store", reader="dr-a")
    window.resize(1400, 850)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(second)
    assert _focused() is window.active_view()
    assert [p.study_uid for p in window.comparison.priors] == [first]
    with qtbot.waitSignals([window.all_loaded, window.comparison.registered], timeout=60000):
        qtbot.keyClick(_focused(), Qt.Key_P, Qt.ControlModifier)
    assert window.comparison.state == "registered"
    prior_stir, current_stir = _stir(window.store, first), _stir(window.store, second)
    transform = transform_between(window.store, prior_stir, current_stir, compute=False)  # cached by the viewer
    left, right = window.session.views["left"], window.session.views["right"]
    view = window.panels["right"].view
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.rect().center() + QPoint(30, 60))
    expected = transform.inverse().map_point(right.point)
    np.testing.assert_allclose(left.point, expected.point, atol=1e-6)
    assert expected.region.replace("_", " ") in window.comparison.region_label.text()
    qtbot.keyClick(_focused(), Qt.Key_Right, Qt.AltModifier)
    kept = transform_between(window.store, prior_stir, current_stir, compute=False)
    region = window.session.region
    assert kept.is_corrected and np.allclose(kept.region(region).nudge_mm, (1.0, 0.0, 0.0))
    assert "nudged +1 +0 +0 mm" in window.comparison.region_label.text()
    label = window.comparison.region_label  # the status bar lays the longer text out (as the reader sees it)
    qtbot.waitUntil(lambda: label.width() >= label.sizeHint().width(), timeout=2000)
    window.grab().save(str(tmp_path / "registered.png"))  # docs/followup-registered.png is this picture
    window.comparison.wait(5000)


def _every_visible_text(window) -> list[str]:
    """Every string a reader can see: labels, buttons, lists, combo items, tooltips, titles, overlays,
    group boxes, tabs, table and tree cells and headers, text boxes."""
    from PySide6.QtWidgets import (
        QGroupBox,
        QPlainTextEdit,
        QTableWidget,
        QTabWidget,
        QTextEdit,
        QTreeWidget,
        QTreeWidgetItemIterator,
        QWidget,
    )

    texts = _visible_strings(window)
    for widget in window.findChildren(QWidget):
        if not widget.isVisible():
            continue
        if isinstance(widget, QGroupBox):
            texts.append(widget.title())
        if isinstance(widget, QTabWidget):
            texts += [widget.tabText(n) for n in range(widget.count())]
        if isinstance(widget, (QTextEdit, QPlainTextEdit)):
            texts.append(widget.toPlainText())
        if isinstance(widget, QTableWidget):
            texts += [widget.item(r, c).text() for r in range(widget.rowCount()) for c in range(widget.columnCount())
                      if widget.item(r, c) is not None]
            texts += [widget.horizontalHeaderItem(c).text() for c in range(widget.columnCount())
                      if widget.horizontalHeaderItem(c) is not None]
        if isinstance(widget, QTreeWidget):
            iterator = QTreeWidgetItemIterator(widget)
            while iterator.value():
                texts += [iterator.value().text(c) for c in range(widget.columnCount())]
                iterator += 1
    return [t for t in texts if t]


def test_hidden_order_every_case_reads_the_same_whichever_visit_is_earlier(qtbot, tmp_path, held_registration):
    """Two stores whose visit dates are swapped: going through every case, with the other visit beside it,
    the reader sees exactly the same strings (widgets, tooltips, window titles, every status message),
    and none of them names an order."""
    from PySide6.QtCore import Qt

    release, _ = held_registration
    release.set()
    seen = []
    for n, dates in enumerate((("20190104", "20190704"), ("20190704", "20190104"))):
        root = tmp_path / f"data{n}"
        uids = visits(root, *dates)
        store_root, _ = _prepared(tmp_path / f"s{n}", (root, uids), "paired-hidden-order")
        window = _open(qtbot, store_root)
        shown: list[str] = []
        window.statusBar().messageChanged.connect(shown.append)
        window.windowTitleChanged.connect(shown.append)
        codes = [e["reading_code"] for e in rs.worklist(window.store, "fu", "dr-a")]
        compared = 0
        for code in sorted(codes):
            with qtbot.waitSignal(window.all_loaded, timeout=20000):
                window.open_case(code)
            shown += _every_visible_text(window)
            if window.comparison.action.isEnabled():
                with qtbot.waitSignal(window.comparison.registered, timeout=30000):
                    qtbot.keyClick(_focused(), Qt.Key_P, Qt.ControlModifier)
                window.loader.wait(20000)
                qtbot.wait(50)
                shown += _every_visible_text(window) + [window.comparison.region_label.text()]
                compared += 1
                window.grab().save(str(tmp_path / f"hidden-{n}-{code}.png"))
                qtbot.keyClick(_focused(), Qt.Key_P, Qt.ControlModifier)
        for text in shown:
            for hint in ("2019", "2018", "timepoint", "prior", "earlier", "later", "baseline", "follow-up",
                         "previous", "newer", "older", "current"):
                assert not re.search(rf"\b{hint}\b", text.lower()), (hint, text)
        assert compared == 2  # each visit of the patient, with the other beside it
        seen.append(sorted(set(shown)))
        window.close()
    assert seen[0] == seen[1]


def test_unpaired_blinded_offers_no_other_visit_in_any_case(qtbot, tmp_path, visit_dirs):
    """The default design in the window: each visit a case of its own, never one beside another, and the
    worklist does not pair a patient's visits."""
    from PySide6.QtCore import Qt

    store_root, _ = _prepared(tmp_path, visit_dirs, "unpaired-blinded")
    window = _open(qtbot, store_root)
    for code in sorted(e["reading_code"] for e in rs.worklist(window.store, "fu", "dr-a")):
        with qtbot.waitSignal(window.all_loaded, timeout=20000):
            window.open_case(code)
        qtbot.keyClick(_focused(), Qt.Key_P, Qt.ControlModifier)  # asks for the other visit: nothing comes
        assert not window.comparison.action.isEnabled() and window.comparison.prior_box.count() == 0
        assert [p.tag.text() for p in window.panels.values() if p.tag.text()] == []
        for text in _every_visible_text(window):
            assert not re.search(r"\b(visit [a-z]|p-\d+|timepoint)\b", text.lower()), text

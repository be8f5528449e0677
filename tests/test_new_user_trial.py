"""Defects a second new-user trial of the reading workstation found (issue 12), in the real window.

A paediatric radiologist read a six-station, two-visit study from the README only. Each test drives
the window as that reader did (keys, wheel and mouse from where the focus lands at open) and checks
what the window shows.
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

pytestmark = pytest.mark.gui


from tests.test_reading_trial import _focused, _key  # noqa: E402


def test_the_window_opens_within_the_screen(qtbot, tmp_path, sample_store):
    """On a screen smaller than the default size, `cno-annotate view` opens a window that fits the screen."""
    from cno_annotate_ui.app import run_viewer
    from cno_annotate_ui.main_window import MainWindow

    store_dir = tmp_path / "store"
    shutil.copytree(sample_store.root, store_dir)
    seen = {}

    def look() -> None:
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not windows:
            QTimer.singleShot(50, look)
            return
        window = windows[0]
        seen["frame"], seen["screen"] = window.frameGeometry(), window.screen().availableGeometry()
        seen["least"] = window.minimumSizeHint()
        window.loader.wait(10000)
        window.close()  # the last window: the viewer's event loop ends (a quit() too would end the next test's)

    for leftover in QApplication.topLevelWidgets():  # earlier tests' windows would keep the event loop running
        leftover.close()
    QTimer.singleShot(0, look)
    assert run_viewer(store_dir, None, False, None) == 0
    frame, screen = seen["frame"], seen["screen"]
    assert screen.height() < 900, "the test needs a screen lower than the default window"
    assert screen.top() <= frame.top() and frame.bottom() <= screen.bottom(), (frame, screen)  # Submit, status bar
    # the offscreen test screen (800 wide) is narrower than the window can be: then no wider than it must
    assert frame.right() <= max(screen.right(), screen.left() + seen["least"].width() + 16), (frame, screen)


def _mark_and_name(window, qtbot, site: str) -> None:
    """M, a click on the image, the site typed and Enter: the keyboard is then on the side."""
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) > 0 and _focused() is not v)
    qtbot.keyClicks(_focused(), site)
    _key(qtbot, Qt.Key_Return)
    assert _focused() is window.lesion_panel.side


def test_enter_on_the_sub_site_moves_on_to_the_grades(open_viewer, qtbot):
    """Site, side, Tab to the sub-site, a letter chooses it, Enter: the next digit grades the first item."""
    window = open_viewer(reader="dr-s")
    _mark_and_name(window, qtbot, "dist fem")
    _key(qtbot, Qt.Key_Tab)
    panel = window.lesion_panel
    assert _focused() is panel.subsite
    _key(qtbot, Qt.Key_M)
    _key(qtbot, Qt.Key_Return)
    _key(qtbot, Qt.Key_2)
    lesion = window.read_session.read.lesions[-1]
    first = next(iter(panel._grade_widgets))
    assert lesion.subsite == "metaphysis"
    assert lesion.grades.get(first) == 2, lesion.grades
    window.loader.wait(5000)


def test_a_digit_on_the_sub_site_grades_instead_of_changing_the_window(open_viewer, qtbot):
    """A grade digit typed while the sub-site has the keyboard grades the first item, not the STIR preset."""
    window = open_viewer(reader="dr-s")
    state = window.session.views["left"]
    before = state.window
    _mark_and_name(window, qtbot, "dist fem")
    _key(qtbot, Qt.Key_Tab)
    _key(qtbot, Qt.Key_2)
    lesion = window.read_session.read.lesions[-1]
    assert lesion.grades.get(next(iter(window.lesion_panel._grade_widgets))) == 2, lesion.grades
    assert state.window == before
    _key(qtbot, Qt.Key_1)  # the keyboard moved on: the next item is graded
    lesion = window.read_session.read.lesions[-1]
    assert list(lesion.grades.values())[:2] == [2, 1], lesion.grades
    window.loader.wait(5000)


def test_undo_and_redo_say_what_they_did(open_viewer, qtbot):
    """Ctrl+Z after a step says in the status bar which step it undid, Ctrl+Shift+Z which it redid."""
    window = open_viewer(reader="dr-s")
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    window.statusBar().showMessage("L1 placed")
    qtbot.keyClick(v, Qt.Key_Z, Qt.ControlModifier)
    assert window.read_session.read.lesions == []
    assert window.statusBar().currentMessage().startswith("Undone: add lesion"), window.statusBar().currentMessage()
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert len(window.read_session.read.lesions) == 1
    assert window.statusBar().currentMessage().startswith("Redone: add lesion"), window.statusBar().currentMessage()
    window.loader.wait(5000)


def _read_next_dialog(qtbot, seen: dict, key=Qt.Key_Escape) -> None:
    """Note the text of the dialog about to open, then press a key in it (as the reader would)."""

    def press() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(20, press)
            return
        seen["text"] = " ".join(filter(None, (dialog.text(), dialog.informativeText())))
        qtbot.keyClick(dialog, key)

    QTimer.singleShot(20, press)


def test_submit_says_how_many_bone_units_are_not_reviewed(open_viewer, qtbot):
    """One lesion placed, no unit marked: the submit confirmation says the other units are not reviewed."""
    window = open_viewer(reader="dr-s")
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    remaining = len(window.read_session.remaining_units())
    seen: dict = {}
    _read_next_dialog(qtbot, seen)
    window.lesion_panel.submit_button.click()
    assert f"{remaining} bone units are not reviewed" in seen["text"], seen["text"]
    assert window.read_session.read.status == "draft"  # Esc: not submitted
    window.loader.wait(5000)


def test_a_single_axial_image_opens_in_its_own_plane(qtbot, tmp_path):
    """A one-image axial series (Siemens, pydicom-data) shows the image, not a one-pixel coronal line."""
    import numpy as np
    from cno_annotate_ui.main_window import MainWindow
    from pydicom.data import get_testdata_file

    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store

    folder = tmp_path / "siemens"
    folder.mkdir()
    shutil.copy(get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm", download=False), folder / "a.dcm")
    store = Store.open(tmp_path / "store")
    import_paths(store, [folder])
    study_uid = store.studies()[0].study_uid
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-s")
    window.resize(1200, 800)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(study_uid)
    panel = window.panels["left"]
    assert window.session.views["left"].plane == "axial"
    assert panel.plane.currentText().lower() == "axial"
    image = panel.view.grab().toImage()
    width, height = image.width(), image.height()
    lit_rows = sum(1 for y in range(0, height, 4)
                   if any(image.pixelColor(x, y).lightness() > 60 for x in range(width // 4, 3 * width // 4, 4)))
    assert lit_rows > height // 4 // 4, lit_rows  # an image, not a line a pixel high
    window.loader.wait(5000)
    np.testing.assert_equal(window.session.views["left"].mapping.slices, 1)


def test_the_crosshair_does_not_run_through_the_label_of_the_lesion_just_placed(open_viewer, qtbot, tmp_path):
    """M and a click put the crosshair on the new marker; its name goes beside it, clear of the crosshair line."""
    import math

    window = open_viewer(reader="dr-s")
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    qtbot.wait(50)
    v.grab().save(str(tmp_path / "label-and-crosshair.png"))
    row, col = v.state.lps_to_screen(v.state.point)
    line_y = math.floor(v.image_to_widget(row, col).y())  # the row the horizontal crosshair is painted on
    (label,) = [painted for painted in v.label_layout() if painted.lines[0].startswith("L1")]
    assert not label.box.top() <= line_y < label.box.bottom(), (label.box, line_y)
    window.loader.wait(5000)


def test_choosing_the_prior_in_its_selector_shows_it_beside_the_current_study(qtbot, tmp_path, monkeypatch):
    """A new user picks the earlier study in the "Prior beside current" selector: it appears beside this one."""
    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate import followup
    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store
    from tests.followup_data import visits
    from tests.test_followup import _Piecewise

    monkeypatch.setattr(followup, "registration_between",
                        lambda store, prior, current, progress=None: _Piecewise({"right_leg": (0.0, 0.0, 0.0), "left_leg": (0.0, 0.0, 0.0)}))
    monkeypatch.setattr(followup, "save_transform", lambda store, transform: None)
    uids = visits(tmp_path / "visits")
    store = Store.open(tmp_path / "store")
    import_paths(store, [tmp_path / "visits"])
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-a")
    window.resize(1400, 850)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(uids["followup"])
    box = window.comparison.prior_box
    assert box.isEnabled() and box.count() == 1 and not window.comparison.active
    qtbot.mouseClick(box, Qt.LeftButton)  # the selector opens its list
    qtbot.waitUntil(lambda: box.view().isVisible())
    item = box.view().visualRect(box.model().index(0, 0)).center()
    qtbot.wait(QApplication.doubleClickInterval() + 100)  # a list that just opened ignores a click at once
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        qtbot.mouseClick(box.view().viewport(), Qt.LeftButton, pos=item)
    assert window.comparison.active and window.comparison.action.isChecked()
    stir = {v.volume_id for v in window.store.volumes(uids["baseline"]) if v.role == "STIR"}
    assert window.session.views["left"].volume.volume_id in stir  # the prior's STIR on the left
    window.loader.wait(5000)


def _drag(qtbot, view, start, end) -> None:
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent

    qtbot.mousePress(view, Qt.LeftButton, pos=start.toPoint())
    view.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, view.mapToGlobal(end), Qt.NoButton, Qt.LeftButton,
                                    Qt.NoModifier))
    qtbot.mouseRelease(view, Qt.LeftButton, pos=end.toPoint())


def test_u_and_l_say_what_the_roi_became(open_viewer, qtbot):
    """After U the status bar says the ROI is the muscle reference; after L, whose ROI it is and the ratio."""
    window = open_viewer(reader="dr-s")
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: bool(window.read_session.read.lesions))
    lesion_id = window.read_session.read.lesions[0].lesion_id
    _key(qtbot, Qt.Key_Escape)
    _key(qtbot, Qt.Key_B)
    _drag(qtbot, v, v.image_to_widget(150.0, 20.0), v.image_to_widget(170.0, 40.0))
    _key(qtbot, Qt.Key_U)
    muscle = window.read_session.read.muscle_roi
    assert muscle is not None
    message = window.statusBar().currentMessage()
    assert message.startswith(f"{muscle.roi_id} is the muscle reference"), message
    _key(qtbot, Qt.Key_E)
    _drag(qtbot, v, v.image_to_widget(300.0, 40.0), v.image_to_widget(306.0, 46.0))
    _key(qtbot, Qt.Key_L)
    ratio = window.read_session.read.lesion(lesion_id).stir_muscle_ratio
    message = window.statusBar().currentMessage()
    assert ratio is not None and f"{lesion_id}'s ROI" in message and f"{ratio:.2f}" in message, message
    window.loader.wait(5000)


def test_delete_on_the_image_deletes_the_selected_lesion_and_ctrl_z_brings_it_back(open_viewer, qtbot):
    """A lesion placed by mistake: click its marker, Delete; the lesion goes (no dialog) and Ctrl+Z restores it."""
    window = open_viewer(reader="dr-s")
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    at = v.image_to_widget(300.0, 40.0).toPoint()
    qtbot.mouseClick(v, Qt.LeftButton, pos=at)
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    lesion_id = window.read_session.read.lesions[0].lesion_id
    qtbot.mouseClick(v, Qt.LeftButton, pos=at)  # a click on its marker selects it; the keyboard is on the image
    assert window.lesion_panel.selected == lesion_id and _focused() is v
    _key(qtbot, Qt.Key_Delete)
    assert window.read_session.read.lesions == []
    assert "deleted" in window.statusBar().currentMessage()
    _key(qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert [lesion.lesion_id for lesion in window.read_session.read.lesions] == [lesion_id]
    window.loader.wait(5000)


def test_a_keymap_message_at_open_is_not_painted_over_by_the_position(open_viewer, qtbot, tmp_path, monkeypatch):
    """A bad keymap's one-line message at open stands alone in the status bar: the position text waits."""
    import json

    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "conf"))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "keymap.json").write_text(json.dumps({"schema_version": "1.0.0", "keys": {"ruler": "K"}}))
    window = open_viewer(reader="dr-s")
    bar = window.statusBar()
    assert bar.currentMessage().startswith("Keymap: ")
    assert window.position_label.text()  # the views are loaded: there is a position to show
    bar.grab().save(str(tmp_path / "status-bar.png"))
    assert not window.position_label.isVisible(), "the position is painted over the keymap message"
    window.loader.wait(5000)


def _follow_up_with_prior(qtbot, tmp_path, monkeypatch):
    """A paired-chronological reading window on the follow-up, Ctrl+P pressed and the prior registered."""
    from cno_annotate import followup
    from tests.followup_data import visits
    from tests.test_followup import _Piecewise
    from tests.test_followup_ui import _open, _prepared

    monkeypatch.setattr(followup, "registration_between",
                        lambda store, prior, current, progress=None: _Piecewise({"right_leg": (0.0, 0.0, 0.0),
                                                                                  "left_leg": (0.0, 0.0, 0.0)}))
    monkeypatch.setattr(followup, "save_transform", lambda store, transform: None)
    root = tmp_path / "visits"
    store_root, _ = _prepared(tmp_path, (root, visits(root)), "paired-chronological")
    window = _open(qtbot, store_root)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    with qtbot.waitSignal(window.comparison.registered, timeout=30000):
        qtbot.keyClick(_focused(), Qt.Key_P, Qt.ControlModifier)
    return window


def test_the_prior_lesions_list_names_sites_as_the_markers_do(qtbot, tmp_path, monkeypatch):
    """The 'Prior lesions' dock says 'prior L1 Distal femur R', as the ghost marker does, not a site id."""
    window = _follow_up_with_prior(qtbot, tmp_path, monkeypatch)
    ghosts = window.comparison.ghost_list
    texts = [ghosts.item(n).text() for n in range(ghosts.count())]
    assert len(texts) == 2 and any(t.startswith("prior L1 Distal femur R") for t in texts), texts
    assert not any("femur.distal" in t for t in texts), texts
    window.loader.wait(10000)


def test_a_persisting_prior_lesion_is_graded_anew_by_the_next_digits(qtbot, tmp_path, monkeypatch):
    """Persisting makes the prior lesion a lesion of this read to grade anew: the digits typed next grade it."""
    window = _follow_up_with_prior(qtbot, tmp_path, monkeypatch)
    comparison = window.comparison
    qtbot.waitUntil(lambda: all(window.session.views[n].ready for n in ("left", "right")), timeout=20000)
    ghosts = comparison.ghost_list
    qtbot.mouseClick(ghosts.viewport(), Qt.LeftButton, pos=ghosts.visualItemRect(ghosts.item(0)).center())
    qtbot.mouseClick(comparison.outcome_buttons["persisting"], Qt.LeftButton)
    assert len(window.read_session.read.lesions) == 1, window.statusBar().currentMessage()
    prior_window = window.session.views["left"].window
    _key(qtbot, Qt.Key_2)
    _key(qtbot, Qt.Key_1)
    [lesion] = window.read_session.read.lesions
    assert list(lesion.grades.values())[:2] == [2, 1], lesion.grades
    assert window.session.views["left"].window == prior_window  # no window preset changed on the prior
    window.loader.wait(10000)


@pytest.mark.parametrize(("region", "physes"), [
    ("Elbows", {("humerus", "distal"), ("radius", "proximal"), ("ulna", "proximal")}),
    ("Wrists / hands", {("radius", "distal"), ("ulna", "distal")})])
def test_go_to_region_reaches_the_elbows_and_wrists(open_viewer, qtbot, sample_truth, region, physes):
    """CNO strikes the distal radius too: 'Go to region' offers the elbows and wrists, at their height."""
    window = open_viewer(reader="dr-s")
    box = window.region
    index = box.findText(region)
    assert index > 0, [box.itemText(n) for n in range(box.count())]
    qtbot.mouseClick(box, Qt.LeftButton)
    qtbot.waitUntil(lambda: box.view().isVisible())
    qtbot.wait(QApplication.doubleClickInterval() + 100)  # a list that just opened ignores a click at once
    qtbot.mouseClick(box.view().viewport(), Qt.LeftButton,
                     pos=box.view().visualRect(box.model().index(index, 0)).center())
    z = window.session.views[window.active_name].point[2]
    heights = [v["lps_mm"][2] for v in sample_truth["normal_variants"]  # the sample's growth plates there
               if (v["bone"], v["segment"]) in physes and v["kind"] == "bright physis"]
    assert abs(z - sum(heights) / len(heights)) < 40, (z, heights)
    assert _focused() is window.active_view()
    window.loader.wait(5000)


def test_the_crosshair_a_few_pixels_off_a_marker_does_not_run_through_its_name(open_viewer, qtbot):
    """The crosshair put 6 px above a marker (a click beside it) leaves the marker's name clear too."""
    import math

    window = open_viewer(reader="dr-s")
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    _key(qtbot, Qt.Key_Escape)
    marker = v.image_to_widget(300.0, 40.0)
    for offset in (-6, -9, 5):
        qtbot.mouseClick(v, Qt.LeftButton, pos=(marker + type(marker)(40, offset)).toPoint())  # beside it
        row, col = v.state.lps_to_screen(v.state.point)
        line_y = math.floor(v.image_to_widget(row, col).y())
        assert abs(line_y - marker.y()) > 3, (line_y, marker.y())
        (label,) = [painted for painted in v.label_layout() if painted.lines[0].startswith("L1")]
        assert not label.box.top() <= line_y < label.box.bottom(), (offset, label.box, line_y)
    window.loader.wait(5000)

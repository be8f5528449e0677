"""Annotating in the viewer, offscreen: click, name the site, grade with digits, undo."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QEvent, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402

from tests.gui_keys import focused as _focused  # noqa: E402
from tests.gui_keys import key as _key  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(open_viewer):
    w = open_viewer(reader="dr-test", size=(1300, 850))
    yield w
    w.loader.wait(5000)


def _view(window, name="left"):
    return window.panels[name].view


def _mark_click(qtbot, window, pos):
    """A click in mark mode; the lesion appears once a double click is ruled out."""
    before = len(window.read_session.read.lesions)
    qtbot.mouseClick(_view(window), Qt.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) > before, timeout=3000)


def _place_distal_femur_lesion(window, qtbot):
    """Mark a lesion at the right distal femur of the sample and name its site by typing."""
    window.mark_action.setChecked(True)
    view = _view(window)
    _mark_click(qtbot, window, view.image_to_widget(337.0, 40.0).toPoint())
    panel = window.lesion_panel
    qtbot.keyClicks(panel.site_picker.search, "dist fem")
    qtbot.keyClick(panel.site_picker.search, Qt.Key_Return)
    return panel


def test_a_click_in_mark_mode_places_a_lesion_at_the_clicked_lps(window, qtbot):
    window.mark_action.setChecked(True)
    view = _view(window)
    state = window.session.views["left"]
    row, col = 337.0, 40.0  # the right distal femur of the sample
    _mark_click(qtbot, window, view.image_to_widget(row, col).toPoint())
    (lesion,) = window.read_session.read.lesions
    expected = state.screen_to_lps(row, col)
    pixel_mm = max(state.mapping.row_mm, state.mapping.col_mm)
    np.testing.assert_allclose(lesion.position, expected, atol=pixel_mm / 2 + 1e-6)
    assert lesion.series_uid == state.volume.volume_id
    np.testing.assert_allclose(state.volume.index_to_lps(np.array(lesion.voxel)), lesion.position, atol=1e-6)
    assert lesion.side == "R"  # proposed from the clicked side of the body (patient's right)
    assert lesion.extent is None
    assert window.lesion_panel.selected == lesion.lesion_id
    # the lesion appears in both linked views
    assert [m.marker.key for m in window.session.screen_markers("left")] == [lesion.lesion_id]
    assert [m.marker.key for m in window.session.screen_markers("right")] == [lesion.lesion_id]


def test_dragging_draws_the_extent(window, qtbot):
    window.mark_action.setChecked(True)
    view = _view(window)
    m = window.session.views["left"].mapping
    start = view.image_to_widget(300.0, 60.0)
    end = view.image_to_widget(306.0, 64.0)  # 6 rows and 4 columns from the centre
    qtbot.mousePress(view, Qt.LeftButton, pos=start.toPoint())
    view.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, view.mapToGlobal(end), Qt.NoButton, Qt.LeftButton,
                                    Qt.NoModifier))
    qtbot.mouseRelease(view, Qt.LeftButton, pos=end.toPoint())
    (lesion,) = window.read_session.read.lesions
    assert lesion.extent["kind"] == "ellipse" and lesion.extent["plane"] == "coronal"
    a, b = lesion.extent["radii_mm"]
    assert a == pytest.approx(4 * m.col_mm, abs=m.col_mm) and b == pytest.approx(6 * m.row_mm, abs=m.row_mm)
    assert lesion.sizes_mm[0] == pytest.approx(2 * a) and lesion.volume_ml > 0


def test_site_search_digit_grade_totals_and_undo(window, qtbot):
    panel = _place_distal_femur_lesion(window, qtbot)
    (lesion,) = window.read_session.read.lesions
    assert lesion.site_id == "femur.distal" and lesion.side == "R"
    selectors = panel._grade_widgets
    assert list(selectors) == ["marrow_hyperintensity", "signal_extension", "soft_tissue_periosteal", "bony_expansion"]
    qtbot.keyClick(selectors["marrow_hyperintensity"], Qt.Key_2)
    qtbot.keyClick(selectors["signal_extension"], Qt.Key_3)
    qtbot.keyClick(selectors["soft_tissue_periosteal"], Qt.Key_N)
    lesion = window.read_session.read.lesions[0]
    assert lesion.grades == {"marrow_hyperintensity": 2, "signal_extension": 3, "soft_tissue_periosteal": "NA"}
    assert "Total 5" in panel.totals.text()
    assert "score 5" in panel.lesions.item(0).text()
    # undo, one gesture at a time: the NA grade, then the 3
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier)
    assert "soft_tissue_periosteal" not in window.read_session.read.lesions[0].grades
    window.undo_action.trigger()
    assert "Total 2" in panel.totals.text()
    for _ in range(3):  # the 2, the site, the lesion itself
        window.undo_action.trigger()
    assert window.read_session.read.lesions == []
    assert "Total 0" in panel.totals.text() and panel.lesions.count() == 0
    assert not window.undo_action.isEnabled() and window.redo_action.isEnabled()
    window.redo_action.trigger()
    assert len(window.read_session.read.lesions) == 1


def _next_tab_stop(widget):
    nxt = widget.nextInFocusChain()
    while not (nxt.focusPolicy() & Qt.TabFocus) or not nxt.isEnabled():
        nxt = nxt.nextInFocusChain()
    return nxt


def test_tab_moves_between_grade_items(window, qtbot):
    """The tab chain runs sub-site -> each grade row in scheme order -> comment."""
    panel = _place_distal_femur_lesion(window, qtbot)
    selectors = list(panel._grade_widgets.values())
    assert _next_tab_stop(panel.subsite) is selectors[0]
    for first, second in zip(selectors, selectors[1:]):
        assert _next_tab_stop(first) is second
    assert _next_tab_stop(selectors[-1]) is panel.comment


def test_unit_marks_without_a_lesion(window, qtbot):
    panel = window.lesion_panel
    qtbot.keyClicks(panel.unit_picker.search, "L5")
    qtbot.keyClick(panel.unit_picker.search, Qt.Key_Return)
    not_assessable = [b for b in panel.units_box.findChildren(type(panel.submit_button)) if b.text() == "Not assessable"][0]
    not_assessable.click()
    assert window.read_session.read.unit_marks == {"spine.L5": "not_assessable"}
    assert "1 not assessable" in panel.totals.text()


def test_refused_edits_show_a_message_not_a_crash(window, qtbot):
    panel = window.lesion_panel
    qtbot.keyClicks(panel.unit_picker.search, "dist fem")
    qtbot.keyClick(panel.unit_picker.search, Qt.Key_Return)
    no_lesion = [b for b in panel.units_box.findChildren(type(panel.submit_button)) if b.text() == "No lesion"][0]
    no_lesion.click()  # no side chosen for a paired bone
    assert "needs a side" in window.statusBar().currentMessage()
    assert window.read_session.read.unit_marks == {}


def test_reads_are_saved_per_reader_and_reopen(window, qtbot, tmp_path):
    window.mark_action.setChecked(True)
    view = _view(window)
    _mark_click(qtbot, window, view.image_to_widget(337.0, 40.0).toPoint())
    from cno_annotate.annotation.reads import list_reads

    (row,) = list_reads(window.store, reader="dr-test")
    from cno_annotate_ui.main_window import MainWindow

    again = MainWindow(window.store_root, reader="dr-test")
    qtbot.addWidget(again)
    again.open_read(row["study_uid"])
    assert len(again.read_session.read.lesions) == 1


def test_selecting_a_lesion_in_the_list_jumps_to_it(window, qtbot):
    session = window.read_session
    state = window.session.views["left"]
    far = state.screen_to_lps(100.0, 90.0)
    near = state.screen_to_lps(337.0, 40.0)
    first = session.add_lesion(far, state.volume.volume_id, state.volume.lps_to_index(far))
    session.add_lesion(near, state.volume.volume_id, state.volume.lps_to_index(near))
    window.lesion_panel.refresh()
    assert not np.allclose(window.session.views["right"].point, far)
    window.lesion_panel.lesions.setCurrentRow(0)
    assert window.lesion_panel.selected == first
    np.testing.assert_allclose(window.session.views["left"].point, far)
    np.testing.assert_allclose(window.session.views["right"].point, far)  # the linked view follows
    selected = [m for m in window.session.markers if m.selected]
    assert [m.key for m in selected] == [first]


def test_a_submitted_read_reopens_as_a_new_version_from_the_panel(window, qtbot):
    panel = _place_distal_femur_lesion(window, qtbot)
    qtbot.keyClick(panel._grade_widgets["marrow_hyperintensity"], Qt.Key_1)
    first = window.read_session.read
    window.read_session.submit()
    assert not panel.editor.isEnabled() and not panel.version_button.isHidden()
    panel.new_version("")  # a reason is required
    assert "needs a reason" in window.statusBar().currentMessage()
    panel.new_version("second look at the knee")
    read = window.read_session.read
    assert read.version == 2 and read.supersedes == first.read_id and read.status == "draft"
    assert len(read.lesions) == 1 and panel.version_button.isHidden() and panel.submit_button.isEnabled()
    assert "version 2" in panel.header.text()
    from cno_annotate.annotation.reads import load_read

    assert load_read(window.store, first.read_id).status == "submitted"


def test_shift_drag_draws_a_box(window, qtbot):
    window.mark_action.setChecked(True)
    view = _view(window)
    m = window.session.views["left"].mapping
    start, end = view.image_to_widget(300.0, 60.0), view.image_to_widget(310.0, 66.0)
    qtbot.mousePress(view, Qt.LeftButton, Qt.ShiftModifier, pos=start.toPoint())
    view.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, view.mapToGlobal(end), Qt.NoButton, Qt.LeftButton,
                                    Qt.ShiftModifier))
    qtbot.mouseRelease(view, Qt.LeftButton, Qt.ShiftModifier, pos=end.toPoint())
    (lesion,) = window.read_session.read.lesions
    assert lesion.extent["kind"] == "box"
    sx, sy, sz = lesion.sizes_mm
    assert sx == pytest.approx(6 * m.col_mm, abs=m.col_mm) and sz == pytest.approx(10 * m.row_mm, abs=m.row_mm)
    assert sy == pytest.approx(max(min(sx, sz) / 2, m.slice_mm / 2) * 2, abs=0.05)
    centre = (np.array(lesion.extent["min_mm"]) + np.array(lesion.extent["max_mm"])) / 2
    np.testing.assert_allclose(lesion.position, centre, atol=0.01)  # corners are stored to 0.01 mm


def test_a_comment_being_typed_is_never_lost(window, qtbot):
    panel = _place_distal_femur_lesion(window, qtbot)
    first = panel.selected
    state = window.session.views["left"]
    other = state.screen_to_lps(100.0, 90.0)
    second = window.read_session.add_lesion(other, state.volume.volume_id, state.volume.lps_to_index(other))
    panel.select(first)
    panel.comment.setFocus()
    panel.comment.setText("bright metaphysis")  # typed, not yet confirmed
    panel.lesions.setCurrentRow(1)  # the reader picks another lesion
    read = window.read_session.read
    assert read.lesion(first).comment == "bright metaphysis" and read.lesion(second).comment == ""
    panel.comment.setText("check on T1")
    window.close()  # closing the window saves it too
    assert window.read_session.read.lesion(second).comment == "check on T1"


# -- issue 12: the keyboard path and marking gestures, driven from where the focus lands ---------------------
def _type(qtbot, text):
    """Type into whatever has the keyboard, as a reader would."""
    for char in text:
        qtbot.keyClicks(_focused(), char)


def test_m_typed_in_a_selector_or_text_box_does_not_toggle_mark_mode(window, qtbot):
    """Defect 4: shortcuts do not fire inside text entry or selectors."""
    panel = _place_distal_femur_lesion(window, qtbot)
    assert not window.mark_action.isChecked()
    panel.subsite.setFocus()  # the reader tabbed into the sub-site selector
    _key(qtbot, Qt.Key_M)
    assert not window.mark_action.isChecked()
    panel.comment.setFocus()
    _type(qtbot, "m")
    assert not window.mark_action.isChecked() and panel.comment.text() == "m"
    _key(qtbot, Qt.Key_Escape)  # back to the image: M toggles mark mode there
    _key(qtbot, Qt.Key_M)
    assert window.mark_action.isChecked()


def test_esc_leaves_mark_mode_marking_is_one_shot_and_double_click_only_fits(window, qtbot, tmp_path):
    """Defect 5."""
    view = _view(window)
    assert _focused() is view
    _key(qtbot, Qt.Key_M)
    assert window.mark_action.isChecked() and view.mark_mode
    _key(qtbot, Qt.Key_Escape)
    assert not window.mark_action.isChecked() and not view.mark_mode
    # one-shot: a lesion placed, mark mode is off again
    _key(qtbot, Qt.Key_M)
    _mark_click(qtbot, window, view.image_to_widget(337.0, 40.0).toPoint())
    assert not window.mark_action.isChecked()
    # sticky marking is an option
    window.sticky_action.setChecked(True)
    window.mark_action.setChecked(True)
    _mark_click(qtbot, window, view.image_to_widget(300.0, 60.0).toPoint())
    assert window.mark_action.isChecked()
    window.sticky_action.setChecked(False)
    # a double click meant to fit (in mark mode) places nothing
    view.setFocus()
    for _ in range(4):
        _key(qtbot, Qt.Key_Plus)
    zoomed = view.grab().toImage()
    assert window.session.views["left"].zoom is not None
    count = len(window.read_session.read.lesions)
    qtbot.mouseDClick(view, Qt.LeftButton, pos=view.rect().center())
    qtbot.wait(2 * _double_click_ms())
    assert len(window.read_session.read.lesions) == count
    assert window.session.views["left"].zoom is None
    fitted = view.grab().toImage()
    fitted.save(str(tmp_path / "fitted.png"))
    assert fitted != zoomed


def _double_click_ms():
    from PySide6.QtWidgets import QApplication

    return QApplication.styleHints().mouseDoubleClickInterval()


def test_ctrl_z_right_after_a_misplaced_click_undoes_it(window, qtbot):
    """Defect 6: the site box has the keyboard after a click; Ctrl+Z still undoes the read."""
    window.mark_action.setChecked(True)
    view = _view(window)
    _mark_click(qtbot, window, view.image_to_widget(337.0, 40.0).toPoint())
    assert _focused() is window.lesion_panel.site_picker.search
    _key(qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert window.read_session.read.lesions == []
    qtbot.waitUntil(lambda: _focused() is _view(window))  # its site box went with it: the image has the keyboard
    _key(qtbot, Qt.Key_Y, Qt.ControlModifier)
    (lesion,) = window.read_session.read.lesions
    # typing in the site box: Ctrl+Z undoes the typing first (a text field being edited), not the read
    window.lesion_panel.select(lesion.lesion_id, focus_site=True)
    _type(qtbot, "fem")
    _key(qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert len(window.read_session.read.lesions) == 1 and window.lesion_panel.site_picker.search.text() == ""


def test_keyboard_path_of_a_lesion_needs_no_mouse_and_ends_on_the_image(window, qtbot, tmp_path):
    """Defects 7 and 8: site type-ahead, side, a digit per grade (each advances), back to the image."""
    view = _view(window)
    state = window.session.views["left"]
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(337.0, 40.0).toPoint())
    _type(qtbot, "dist fem")  # typed at once: the lesion is placed and the letters reach its site box
    _key(qtbot, Qt.Key_Return)
    assert _focused() is window.lesion_panel.side
    _key(qtbot, Qt.Key_R)
    for digit in (Qt.Key_2, Qt.Key_3, Qt.Key_1, Qt.Key_0):
        _key(qtbot, digit)
    (lesion,) = window.read_session.read.lesions
    assert lesion.site_id == "femur.distal" and lesion.side == "R"
    assert lesion.grades == {"marrow_hyperintensity": 2, "signal_extension": 3, "soft_tissue_periosteal": 1,
                             "bony_expansion": 0}
    assert _focused() is view
    before, grab = state.slice_index, view.grab().toImage()
    _key(qtbot, Qt.Key_Down)
    assert state.slice_index == before + 1 and view.grab().toImage() != grab
    # Enter in a grade row also gives the image the keyboard back
    window.lesion_panel.focus_first_grade()
    _key(qtbot, Qt.Key_Return)
    assert _focused() is view
    window.grab().save(str(tmp_path / "keyboard-path.png"))


def test_clicking_a_marker_selects_its_lesion(window, qtbot):
    """Defect 12."""
    session = window.read_session
    state = window.session.views["left"]
    far = state.screen_to_lps(300.0, 60.0)
    near = state.screen_to_lps(337.0, 40.0)
    first = session.add_lesion(far, state.volume.volume_id, state.volume.lps_to_index(far))
    second = session.add_lesion(near, state.volume.volume_id, state.volume.lps_to_index(near))
    window.lesion_panel.select(second)
    view = _view(window)
    row, col = state.lps_to_screen(far)
    edge = view.image_to_widget(row, col + 1.0)  # on the marker, off its centre
    qtbot.mouseClick(view, Qt.LeftButton, pos=edge.toPoint())
    assert window.lesion_panel.selected == first
    assert window.lesion_panel.lesions.currentItem().data(Qt.UserRole) == first
    assert [m.key for m in window.session.markers if m.selected] == [first]


def test_adjudicator_markers_follow_the_readers_extents(qtbot, tmp_path, sample_store):
    """Defect 16: the adjudicator sees each reader's lesion with its drawn extent, not a 5 mm circle."""
    import shutil

    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    root = tmp_path / "adj"
    shutil.copytree(sample_store.root, root)
    store = Store.open(root)
    rs.create(store, "adj", seed=1)
    rs.add_cases(store, "adj", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "adj", ["dr-a"])
    rs.add_readers(store, "adj", ["dr-adj"], role="adjudicator")
    rs.assign(store, "adj")
    study = rs.get(store, "adj")
    uid = rs.study_uid_of(store, "adj", "CNO-0001")
    read = ReadSession.open_or_create(store, uid, "dr-a", study.scheme_id, reading_study="adj",
                                      scheme_version=study.scheme_version)
    extent = {"kind": "ellipse", "plane": "coronal", "radii_mm": [14.0, 22.0], "slice_range_mm": [-30.0, -2.0]}
    lesion = read.add_lesion((-60.0, -16.0, -500.0), "1.2", (0, 0, 0), site_id="femur.distal", side="R",
                             extent=extent)
    read.set_grade(lesion, "marrow_hyperintensity", 2)
    read.submit()
    store.close()
    window = MainWindow(root, reader="dr-adj", reading_study="adj")
    window.resize(1300, 850)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    (marker,) = [m for m in window.session.markers if m.key.startswith("dr-a/")]
    assert marker.radii_mm == pytest.approx((14.0, 14.0, 22.0))
    window.session.set_point("left", marker.lps)
    (cut,) = window.session.screen_markers("left")
    m = window.session.views["left"].mapping
    assert cut.col_radius * m.col_mm == pytest.approx(14.0, rel=0.05)
    assert cut.row_radius * m.row_mm == pytest.approx(22.0, rel=0.05)
    window.loader.wait(5000)


def test_delete_is_at_once_and_undoable_without_a_dialog(window, qtbot):
    from PySide6.QtWidgets import QApplication

    panel = _place_distal_femur_lesion(window, qtbot)
    qtbot.mouseClick(panel.delete_button, Qt.LeftButton)
    assert window.read_session.read.lesions == []
    assert QApplication.activeModalWidget() is None
    assert "Ctrl+Z" in window.statusBar().currentMessage()
    window.undo_action.trigger()
    assert len(window.read_session.read.lesions) == 1


def test_an_edit_on_a_read_changed_elsewhere_is_refused_and_the_panel_reloads(window, qtbot):
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    panel = _place_distal_femur_lesion(window, qtbot)
    lesion = panel.selected
    elsewhere = ReadSession.open(Store.open(window.store_root), window.read_session.read.read_id)
    elsewhere.update_lesion(lesion, comment="from the other window")
    panel.comment.setFocus()
    panel.comment.setText("mine")
    qtbot.keyClick(panel.comment, Qt.Key_Return)
    assert "changed in another window" in window.statusBar().currentMessage()
    assert window.read_session.read.lesion(lesion).comment == "from the other window"
    panel.comment.setFocus()
    panel.comment.setText("mine")
    qtbot.keyClick(panel.comment, Qt.Key_Return)  # the retry, on the reloaded read, goes through
    assert window.read_session.read.lesion(lesion).comment == "mine"


def test_the_viewer_waits_only_briefly_for_a_locked_store(window):
    from cno_annotate.store.db import INTERACTIVE_BUSY_TIMEOUT

    assert window.store.db.execute("PRAGMA busy_timeout").fetchone()[0] == int(INTERACTIVE_BUSY_TIMEOUT * 1000)


def test_opening_a_case_in_the_window_creates_no_read_until_the_first_lesion(window, qtbot):
    def counts():
        db = window.store.db
        return (db.execute("SELECT COUNT(*) FROM reads").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM audit WHERE entity LIKE 'read%'").fetchone()[0])

    assert window.read_session is not None and not window.read_session.stored
    assert counts() == (0, 0)  # only looked at: nothing written, nothing audited
    window.mark_action.setChecked(True)
    _mark_click(qtbot, window, _view(window).image_to_widget(337.0, 40.0).toPoint())
    reads, audited = counts()
    assert reads == 1 and audited >= 1 and window.read_session.stored


def test_a_read_on_a_read_only_store_is_shown_read_only(window, qtbot, monkeypatch):
    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate.annotation.reads import list_reads
    from cno_annotate.store import db as store_db

    window.mark_action.setChecked(True)
    _mark_click(qtbot, window, _view(window).image_to_widget(337.0, 40.0).toPoint())
    (row,) = list_reads(window.store, reader="dr-test")
    monkeypatch.setattr(store_db, "writable", lambda path: False)  # read-only media
    again = MainWindow(window.store_root, reader="dr-test")
    qtbot.addWidget(again)
    assert again.store.read_only
    again.open_read(row["study_uid"])
    panel = again.lesion_panel
    assert len(again.read_session.read.lesions) == 1
    assert not panel.submit_button.isEnabled() and not panel.units_box.isEnabled()
    assert not panel.editor.isEnabled() and not panel.version_button.isVisible()
    assert "read-only" in panel.header.text()
    assert "read-only" in again.statusBar().currentMessage()

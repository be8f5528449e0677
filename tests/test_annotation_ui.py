"""Annotating in the viewer, offscreen: click, name the site, grade with digits, undo."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QEvent, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(open_viewer):
    w = open_viewer(reader="dr-test", size=(1300, 850))
    yield w
    w.loader.wait(5000)


def _view(window, name="left"):
    return window.panels[name].view


def _place_distal_femur_lesion(window, qtbot):
    """Mark a lesion at the right distal femur of the sample and name its site by typing."""
    window.mark_action.setChecked(True)
    view = _view(window)
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(337.0, 40.0).toPoint())
    panel = window.lesion_panel
    qtbot.keyClicks(panel.site_picker.search, "dist fem")
    qtbot.keyClick(panel.site_picker.search, Qt.Key_Return)
    return panel


def test_a_click_in_mark_mode_places_a_lesion_at_the_clicked_lps(window, qtbot):
    window.mark_action.setChecked(True)
    view = _view(window)
    state = window.session.views["left"]
    row, col = 337.0, 40.0  # the right distal femur of the sample
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(row, col).toPoint())
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
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(337.0, 40.0).toPoint())
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

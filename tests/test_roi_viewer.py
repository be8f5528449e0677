"""ROIs in the real window: drawn with keys and the mouse from where the focus lands at open, seen in the pixels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QMouseEvent  # noqa: E402

from tests.gui_keys import focused as _focused  # noqa: E402
from tests.gui_keys import key as _key  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(open_viewer):
    w = open_viewer(reader=None, size=(1280, 800))
    yield w
    w.loader.wait(5000)


def _drag(qtbot, view, start: QPointF, end: QPointF) -> None:
    qtbot.mousePress(view, Qt.LeftButton, pos=start.toPoint())
    view.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, view.mapToGlobal(end), Qt.NoButton, Qt.LeftButton,
                                    Qt.NoModifier))
    qtbot.mouseRelease(view, Qt.LeftButton, pos=end.toPoint())


def _expected_rectangle(view, state, start: QPointF, end: QPointF) -> np.ndarray:
    (r0, c0), (r1, c1) = view.widget_to_image(QPointF(start.toPoint())), view.widget_to_image(QPointF(end.toPoint()))
    rows = np.arange(int(np.ceil(min(r0, r1) - 1e-6)), int(np.floor(max(r0, r1) + 1e-6)) + 1)
    cols = np.arange(int(np.ceil(min(c0, c1) - 1e-6)), int(np.floor(max(c0, c1) + 1e-6)) + 1)
    return state.image()[np.ix_(rows, cols)].astype(float)


def _orange_near(image, point: QPointF, reach: int = 3) -> bool:
    for dx in range(-reach, reach + 1):
        for dy in range(-reach, reach + 1):
            c = image.pixelColor(int(point.x()) + dx, int(point.y()) + dy)
            if c.red() > 200 and 110 < c.green() < 200 and c.blue() < 110:
                return True
    return False


def test_rectangle_roi_drawn_with_b_shows_its_outline_and_numpy_statistics(window, qtbot, tmp_path):
    v = window.panels["left"].view
    state = window.session.views["left"]
    assert _focused() is v  # the keyboard starts on the image
    _key(qtbot, Qt.Key_B)
    assert window.roi_actions["rectangle"].isChecked()
    start, end = v.image_to_widget(150.2, 20.3), v.image_to_widget(190.7, 60.6)
    _drag(qtbot, v, start, end)
    assert not window.roi_actions["rectangle"].isChecked()  # one ROI, then back to navigation
    (roi,) = window.read_session.read.rois
    assert (roi.kind, roi.plane, roi.series_uid) == ("rectangle", state.plane, state.volume.volume_id)
    expected = _expected_rectangle(v, state, start, end)
    (shown,) = window.session.rois_on("left")
    assert shown.stats.count == expected.size
    assert shown.stats.mean == pytest.approx(expected.mean())
    assert shown.stats.sd == pytest.approx(expected.std(ddof=1))
    m = state.mapping
    assert shown.stats.area_mm2 == pytest.approx(expected.size * m.row_mm * m.col_mm)
    assert all(line in v.overlay_texts() for line in shown.stats.label.split("\n"))
    assert f"mean {expected.mean():.1f}" in shown.stats.label
    grab = v.grab().toImage()
    grab.save(str(tmp_path / "rectangle-roi.png"))
    top_middle = QPointF((start.x() + end.x()) / 2, start.y())
    left_middle = QPointF(start.x(), (start.y() + end.y()) / 2)
    inside = QPointF((start.x() + end.x()) / 2, (start.y() + end.y()) / 2 + 7)
    assert _orange_near(grab, top_middle) and _orange_near(grab, left_middle)  # the outline is drawn
    assert not _orange_near(grab, inside, reach=1)
    # the right view shows T1 on the same plane and slice: the same outline measures T1's voxels there
    right = window.session.views["right"]
    (on_t1,) = window.session.rois_on("right")
    assert on_t1.roi == roi and right.volume.volume_id != state.volume.volume_id
    # Delete (on the image) removes it; Ctrl+Z brings it back
    qtbot.mouseClick(v, Qt.LeftButton, pos=inside.toPoint())
    assert window.session.selected_roi == roi.roi_id
    _key(qtbot, Qt.Key_Delete)
    assert window.read_session.read.rois == [] and window.session.rois_on("left") == []
    _key(qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert [r.roi_id for r in window.read_session.read.rois] == [roi.roi_id]
    # only on its slice
    _key(qtbot, Qt.Key_Down)
    assert window.session.rois_on("left") == []
    _key(qtbot, Qt.Key_Up)
    assert len(window.session.rois_on("left")) == 1


def test_polygon_by_clicks_closes_on_enter_and_esc_cancels_one_being_drawn(window, qtbot, tmp_path):
    v = window.panels["left"].view
    state = window.session.views["left"]
    corners = [(150.0, 20.0), (150.0, 60.0), (190.0, 20.0)]  # image (row, column): a right triangle
    _key(qtbot, Qt.Key_P)
    for corner in corners[:2]:
        qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(*corner).toPoint())
    _key(qtbot, Qt.Key_Escape)  # cancels the polygon being drawn and leaves the tool
    assert not window.roi_actions["polygon"].isChecked() and not v.drawing_roi()
    assert window.read_session.read.rois == []
    _key(qtbot, Qt.Key_P)
    for corner in corners:
        qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(*corner).toPoint())
    assert v.drawing_roi()
    _key(qtbot, Qt.Key_Return)
    (roi,) = window.read_session.read.rois
    assert roi.kind == "polygon" and len(roi.points_mm) == 3
    (shown,) = window.session.rois_on("left")
    placed = np.array([v.widget_to_image(QPointF(v.image_to_widget(*c).toPoint())) for c in corners])
    rows, cols = np.mgrid[0:state.mapping.rows, 0:state.mapping.cols]
    # inside the triangle: on the near side of each of its three edges (barycentric, independent of the even-odd rule)
    (r0, c0), (r1, c1), (r2, c2) = placed
    det = (c1 - c0) * (r2 - r0) - (c2 - c0) * (r1 - r0)
    u = ((cols - c0) * (r2 - r0) - (rows - r0) * (c2 - c0)) / det
    w = ((c1 - c0) * (rows - r0) - (r1 - r0) * (cols - c0)) / det
    inside = (u >= 0) & (w >= 0) & (u + w <= 1)
    expected = state.image()[inside].astype(float)
    assert shown.stats.count == pytest.approx(expected.size, abs=2)  # boundary voxels may fall either way
    assert shown.stats.mean == pytest.approx(expected.mean(), rel=0.02)
    grab = v.grab().toImage()
    grab.save(str(tmp_path / "polygon-roi.png"))
    edge = (v.image_to_widget(*corners[0]) + v.image_to_widget(*corners[1])) / 2
    assert _orange_near(grab, edge)


def test_muscle_and_lesion_rois_give_the_stir_ratio_stored_and_shown_again_on_reopen(window, qtbot, tmp_path):
    from cno_annotate_ui.main_window import MainWindow

    v = window.panels["left"].view
    state = window.session.views["left"]
    assert state.volume.role == "STIR"
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: bool(window.read_session.read.lesions))
    lesion_id = window.read_session.read.lesions[0].lesion_id
    _key(qtbot, Qt.Key_Escape)
    assert window.lesion_panel.selected == lesion_id
    _key(qtbot, Qt.Key_E)
    _drag(qtbot, v, v.image_to_widget(300.0, 40.0), v.image_to_widget(306.0, 46.0))
    _key(qtbot, Qt.Key_L)
    _key(qtbot, Qt.Key_B)
    _drag(qtbot, v, v.image_to_widget(150.0, 20.0), v.image_to_widget(170.0, 40.0))
    _key(qtbot, Qt.Key_U)
    read = window.read_session.read
    lesion_roi = next(r for r in read.rois if r.role == "lesion")
    assert lesion_roi.lesion_id == lesion_id and read.muscle_roi is not None
    stats = {s.roi.role: s.stats for s in window.session.rois_on("left")}
    ratio = read.lesion(lesion_id).stir_muscle_ratio
    assert ratio == pytest.approx(stats["lesion"].mean / stats["muscle"].mean, abs=1e-4)
    title = f"STIR lesion:muscle {ratio:.2f}"
    assert any(title in text for text in v.overlay_texts())
    v.grab().toImage().save(str(tmp_path / "ratio.png"))
    store_dir = window.store_root
    window.close()
    again = MainWindow(store_dir, reader=window.reader)
    qtbot.addWidget(again)
    again.resize(1280, 800)
    again.show()
    with qtbot.waitSignal(again.all_loaded, timeout=20000):
        again.select_study(again.store.studies()[0].study_uid)
    assert {s.roi.roi_id for s in again.session.rois_on("left")} == {r.roi_id for r in read.rois}
    assert any(title in text for text in again.panels["left"].view.overlay_texts())
    again.loader.wait(5000)


def test_cine_plays_the_slices_at_the_set_rate_and_any_navigation_key_stops_it(window, qtbot):
    state = window.session.views["left"]
    window.cine_fps.setValue(25)
    assert window._cine_timer.interval() == 40  # 1000 ms / 25 fps
    start = state.slice_index
    _key(qtbot, Qt.Key_K)
    assert window.cine_running()
    seen = {start}
    qtbot.waitUntil(lambda: seen.add(state.slice_index) or len(seen) >= 3, timeout=5000)
    _key(qtbot, Qt.Key_Down)  # a navigation key stops it (and still moves one slice)
    assert not window.cine_running() and not window.cine_action.isChecked()
    stopped = state.slice_index
    qtbot.wait(200)
    assert state.slice_index == stopped
    _key(qtbot, Qt.Key_K)
    assert window.cine_running()
    _key(qtbot, Qt.Key_K)  # K again stops it
    assert not window.cine_running()
    _key(qtbot, Qt.Key_K)
    qtbot.mouseClick(window.panels["left"].view, Qt.LeftButton)  # so does a click on the image
    assert not window.cine_running()
    # the last slice is followed by the first
    window.session.go_to_slice("left", state.mapping.slices - 1)
    assert window.session.cine_step("left") == 0 and state.slice_index == 0


def test_polygon_extent_drawn_with_x_is_the_lesions_extent_and_drawn_as_its_polygon(window, qtbot, tmp_path):
    from cno_annotate.display.overlay import SELECTED_COLOUR as SELECTED

    v = window.panels["left"].view
    _key(qtbot, Qt.Key_X)  # no lesion selected: refused with a message, nothing to draw
    assert not window.extent_action.isChecked()
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(170.0, 50.0).toPoint())
    qtbot.waitUntil(lambda: bool(window.read_session.read.lesions))
    lesion_id = window.read_session.read.lesions[0].lesion_id
    _key(qtbot, Qt.Key_Escape)
    _key(qtbot, Qt.Key_X)
    assert window.extent_action.isChecked()
    corners = [(150.0, 30.0), (150.0, 70.0), (190.0, 70.0), (185.0, 35.0)]
    for corner in corners:
        qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(*corner).toPoint())
    _key(qtbot, Qt.Key_Return)
    lesion = window.read_session.read.lesion(lesion_id)
    assert lesion.extent["kind"] == "polygon" and len(lesion.extent["points_mm"]) == 4
    assert lesion.extent["plane"] == window.session.views["left"].plane
    assert window.read_session.read.rois == []  # an extent, not an ROI
    (cut,) = [sm for sm in window.session.screen_markers("left") if sm.marker.key == lesion_id]
    assert cut.outline is not None and len(cut.outline) == 4
    grab = v.grab().toImage()
    grab.save(str(tmp_path / "polygon-extent.png"))
    edge = (v.image_to_widget(*corners[1]) + v.image_to_widget(*corners[2])) / 2  # the polygon's lower right edge
    selected = QColor(SELECTED)

    def magenta(point):
        return any(abs(grab.pixelColor(int(point.x()) + dx, int(point.y()) + dy).red() - selected.red()) < 40
                   and abs(grab.pixelColor(int(point.x()) + dx, int(point.y()) + dy).green() - selected.green()) < 40
                   for dx in range(-3, 4) for dy in range(-3, 4))
    assert magenta(edge)
    _key(qtbot, Qt.Key_Z, Qt.ControlModifier)  # one undo step
    assert window.read_session.read.lesion(lesion_id).extent is None


def test_polygon_extent_geometry_in_the_core():
    from cno_annotate.display.marking import polygon_extent
    from cno_annotate.display.overlay import Marker, marker_outline, markers_on_slice
    from cno_annotate.display.session import ViewerSession
    from tests.test_display import coronal_volume

    session = ViewerSession()
    session.set_volume("left", coronal_volume(shape=(30, 40, 30)))
    state = session.views["left"]
    volume, mapping, _ = state.loaded()
    points = [state.screen_to_lps(r, c) for r, c in ((10, 10), (10, 30), (20, 30))]
    extent = polygon_extent(state, points)
    normal = {"axial": 2, "coronal": 1, "sagittal": 0}[state.plane]
    assert extent["plane"] == state.plane
    low, high = extent["slice_range_mm"]
    assert low < points[0][normal] < high
    marker = Marker(tuple(np.mean(points, axis=0)), (5, 5, 5), outline=marker_outline(extent))
    (cut,) = markers_on_slice([marker], mapping, volume.affine, state.slice_index)
    assert cut.outline == pytest.approx(np.array([[10, 10], [10, 30], [20, 30]]), abs=0.01)
    far = state.slice_index + 10  # 50 mm away; the slab is 15 mm deep on each side
    assert all(c.outline is None for c in markers_on_slice([marker], mapping, volume.affine, far))


def test_after_setting_the_frame_rate_the_keys_act_on_the_image_again(window, qtbot):
    """Click the fps box, type a rate, Enter: K starts cine and Down moves the slice, not the rate."""
    qtbot.mouseClick(window.cine_fps, Qt.LeftButton)
    assert _focused() is window.cine_fps
    window.cine_fps.lineEdit().selectAll()
    qtbot.keyClicks(_focused(), "2")
    _key(qtbot, Qt.Key_Return)
    assert window.cine_fps.value() == 2
    _key(qtbot, Qt.Key_K)
    assert window.cine_running()
    _key(qtbot, Qt.Key_Down)
    assert not window.cine_running() and window.cine_fps.value() == 2


def test_after_choosing_a_lesion_in_the_list_its_letter_keys_still_work(window, qtbot):
    """Clicking a row of the lesion list selects the lesion and puts the keyboard on its first grade; X (polygon
    extent) and M (mark) still act."""
    state = window.session.views["left"]
    session = window.read_session
    assert session is not None
    session.add_lesion(tuple(state.point), state.volume.volume_id, (1, 1, 1), site_id="femur.distal", side="R")
    window._refresh_markers()
    window.lesion_panel.refresh()
    lesions = window.lesion_panel.lesions
    qtbot.mouseClick(lesions.viewport(), Qt.LeftButton, pos=lesions.visualItemRect(lesions.item(0)).center())
    assert _focused() is next(iter(window.lesion_panel._grade_widgets.values()))
    _key(qtbot, Qt.Key_X)
    assert window.extent_action.isChecked()
    _key(qtbot, Qt.Key_Escape)
    qtbot.mouseClick(lesions.viewport(), Qt.LeftButton, pos=lesions.visualItemRect(lesions.item(0)).center())
    _key(qtbot, Qt.Key_M)
    assert window.mark_action.isChecked()

"""The Qt viewer, offscreen: what a radiologist sees and does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402

from cno_annotate.display.overlay import Marker  # noqa: E402
from cno_annotate.display.windowing import Window  # noqa: E402
from cno_annotate.importer import import_paths  # noqa: E402
from cno_annotate.store import Store  # noqa: E402
from tests.conftest import SAMPLE  # noqa: E402
from tests.test_display import coronal_volume  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(open_viewer):
    w = open_viewer(reader=None, size=(1200, 800))
    yield w
    w.loader.wait(5000)


def view(window, name="left"):
    return window.panels[name].view


def test_both_series_load_stir_left_t1_right(window):
    left, right = window.session.views["left"], window.session.views["right"]
    assert left.ready and right.ready
    assert left.volume.role == "STIR" and right.volume.role == "T1"
    assert left.volume.meta["kind"] == right.volume.meta["kind"] == "composed"


def test_scrolling_changes_the_slice_and_the_linked_view_follows(window, qtbot):
    left, right = window.session.views["left"], window.session.views["right"]
    start = left.slice_index
    view(window).setFocus()
    qtbot.keyClick(view(window), Qt.Key_Down)
    assert left.slice_index == start + 1 and right.slice_index == start + 1
    qtbot.keyClick(view(window), Qt.Key_End)
    assert left.slice_index == left.mapping.slices - 1
    qtbot.keyClick(view(window), Qt.Key_Home)
    assert left.slice_index == 0
    before = left.slice_index
    view(window).wheelEvent(_wheel(view(window), -120))
    assert left.slice_index == before + 1


def _wheel(widget, delta, modifiers=Qt.NoModifier):
    from PySide6.QtGui import QWheelEvent

    centre = QPointF(widget.width() / 2, widget.height() / 2)
    return QWheelEvent(centre, widget.mapToGlobal(centre), QPoint(0, 0), QPoint(0, delta),
                       Qt.NoButton, modifiers, Qt.NoScrollPhase, False)


def test_crosshair_click_puts_the_other_view_on_the_same_lps_point_with_other_grids(qtbot, tmp_path):
    from cno_annotate_ui.main_window import MainWindow

    w = MainWindow(tmp_path / "empty-store")
    w.resize(1000, 700)
    qtbot.addWidget(w)
    w.show()
    stir = coronal_volume()
    t1 = coronal_volume(shape=(9, 50, 24), spacing=(2.5, 2.4, 3.3), origin=(-29.0, -11.0, 101.0), role="T1")
    w.session.set_volume("left", stir, "STIR")
    w.session.set_volume("right", t1, "T1")
    left_view = view(w)
    target_pixel = (23, 11)  # row, col in the left image
    position = left_view.image_to_widget(*target_pixel)
    qtbot.mouseClick(left_view, Qt.LeftButton, pos=position.toPoint())
    left, right = w.session.views["left"], w.session.views["right"]
    clicked = left.point
    expected = stir.index_to_lps(np.array([11.0, 23.0, left.slice_index]))
    np.testing.assert_allclose(clicked, expected, atol=0.5 * 3.0)  # within half a pixel of the click
    np.testing.assert_allclose(right.point, clicked)
    k = t1.lps_to_index(clicked)[2]
    assert abs(right.slice_index - k) <= 0.5  # the T1 slice that holds the point
    row, col = right.lps_to_screen(clicked)
    drawn = view(w, "right").image_to_widget(row, col)
    back = right.screen_to_lps(*view(w, "right").widget_to_image(drawn))
    np.testing.assert_allclose(back[[0, 2]], clicked[[0, 2]], atol=1e-6)


def test_window_level_changes_rendered_pixels(window):
    """The grey shown for a voxel follows (value - low) * 255 / width, clipped to 0..255."""
    v = view(window)
    state = window.session.views["left"]
    image = state.image()
    row, col = np.unravel_index(int(np.argmax(image[1:-1, 1:-1])), (image.shape[0] - 2, image.shape[1] - 2))
    row, col = row + 1, col + 1
    neighbourhood = image[row - 1:row + 2, col - 1:col + 2]
    where = v.image_to_widget(row, col)
    x, y = int(where.x()), int(where.y())

    def shown(w: Window) -> int:
        window.session.set_window("left", w)
        return v.grab().toImage().pixelColor(x, y).red()

    value = float(image[row, col])
    for w in (Window(level=value, width=400.0), Window(level=value - 150.0, width=600.0)):
        expected = np.clip((neighbourhood - w.low) * 255.0 / w.width, 0, 255)
        assert expected.min() - 1 <= shown(w) <= expected.max() + 1
    assert shown(Window(level=neighbourhood.min() - 1000, width=10)) == 255  # all above the window
    assert shown(Window(level=neighbourhood.max() + 1000, width=10)) == 0  # all below


def test_right_drag_adjusts_window(window, qtbot):
    v = view(window)
    before = window.session.views["left"].window
    centre = QPoint(v.width() // 2, v.height() // 2)
    qtbot.mousePress(v, Qt.RightButton, pos=centre)
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent

    move = QMouseEvent(QEvent.MouseMove, QPointF(centre + QPoint(60, -30)), QPointF(v.mapToGlobal(centre)),
                       Qt.NoButton, Qt.RightButton, Qt.NoModifier)
    v.mouseMoveEvent(move)
    qtbot.mouseRelease(v, Qt.RightButton, pos=centre + QPoint(60, -30))
    after = window.session.views["left"].window
    assert after.width > before.width and after.level > before.level


def test_plane_switch_gives_the_right_shape_and_aspect(window, qtbot):
    state = window.session.views["left"]
    volume = state.volume
    qtbot.keyClick(view(window), Qt.Key_A)
    assert state.plane == "axial" and window.panels["left"].plane.currentText() == "Axial"
    image = state.image()
    assert image.shape == (volume.shape[0], volume.shape[2])  # anterior-posterior x left-right
    spacing = volume.spacing
    top_left = view(window).image_to_widget(-0.5, -0.5)
    bottom_right = view(window).image_to_widget(image.shape[0] - 0.5, image.shape[1] - 0.5)
    drawn = (bottom_right.y() - top_left.y()) / (bottom_right.x() - top_left.x())
    assert drawn == pytest.approx(image.shape[0] * spacing[2] / (image.shape[1] * spacing[0]), rel=1e-6)
    qtbot.keyClick(view(window), Qt.Key_S)
    assert state.image().shape == (volume.shape[1], volume.shape[0])


def test_ground_truth_lesion_marker_is_drawn_at_its_pixel(window):
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())
    lesion = truth["lesions"][0]
    window.set_markers([Marker(tuple(lesion["lps_mm"]), tuple(lesion["radii_mm"]), "L1", colour="#00ff00")])
    window.session.set_point("left", lesion["lps_mm"])
    v = view(window)
    state = window.session.views["left"]
    (cut,) = window.session.screen_markers("left")
    expected = state.volume.lps_to_index(np.array(lesion["lps_mm"]))
    assert (cut.row, cut.col) == pytest.approx((expected[1], expected[0]))
    grab = v.grab().toImage()
    centre = v.image_to_widget(cut.row, cut.col)
    radius = cut.col_radius * state.mapping.col_mm * v.pixels_per_mm()
    hits = [grab.pixelColor(int(round(centre.x() + dx)), int(round(centre.y())))
            for dx in (radius - 1, radius, radius + 1, -radius - 1, -radius, -radius + 1)]
    assert sum(c.green() > 150 and c.red() < 120 and c.blue() < 120 for c in hits) >= 2
    assert len(window.session.markers) == 1  # the extra marker (the read has no lesions)
    # the same lesion appears in the linked T1 view
    assert len(window.session.screen_markers("right")) == 1


def test_broken_study_shows_a_message_and_the_window_stays_usable(qtbot, tmp_path, small_study):
    from cno_annotate_ui.main_window import MainWindow

    broken = tmp_path / "broken"
    shutil.copytree(small_study, broken)
    store = Store.open(tmp_path / "store")
    import_paths(store, [broken])
    import_paths(store, [SAMPLE / "DICOM"])
    broken_uid = next(s["study_uid"] for s in store.studies() if s["images"] == 36)
    store.close()
    shutil.rmtree(broken / "DICOM")  # the files are gone after import
    w = MainWindow(tmp_path / "store")
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.all_loaded, timeout=20000):
        w.select_study(broken_uid)
    left = w.session.views["left"]
    assert left.status == "error" and "could be read" in left.message
    assert "Cannot" in w.statusBar().currentMessage()
    other = next(s["study_uid"] for s in w.store.studies() if s["study_uid"] != broken_uid)
    with qtbot.waitSignal(w.all_loaded, timeout=20000):
        w.select_study(other)
    assert w.session.views["left"].ready and w.session.views["right"].ready


def test_zoom_keys_and_fit(window, qtbot):
    v = view(window)
    fit = v.pixels_per_mm()
    qtbot.keyClick(v, Qt.Key_Plus)
    assert v.pixels_per_mm() == pytest.approx(fit * 1.25)
    assert view(window, "right").pixels_per_mm() == pytest.approx(fit * 1.25)  # zoom is linked
    qtbot.keyClick(v, Qt.Key_F)
    assert v.pixels_per_mm() == pytest.approx(fit)


def test_jump_to_region_moves_head_feet_only(window):
    state = window.session.views["left"]
    before = state.point.copy()
    window._jump_to_region(window.region.findText("Knees"))
    assert state.point[2] < before[2] - 100 and state.point[0] == before[0]


def test_qt_binding_keeps_references_to_none():
    """PySide6 6.12.0 loses a reference to None per void QPainter call: a long session crashes."""
    from PySide6.QtGui import QImage, QPainter, QPen

    image = QImage(64, 64, QImage.Format_RGB32)
    painter = QPainter(image)
    before = sys.getrefcount(None)
    for _ in range(2000):
        painter.drawLine(QPointF(0, 0), QPointF(9, 9))
        painter.setPen(QPen(QColor(1, 2, 3)))
    painter.end()
    assert before - sys.getrefcount(None) < 100


def test_help_lists_every_action():
    from cno_annotate_ui.help import SHORTCUTS, help_html

    html = help_html()
    for _, rows in SHORTCUTS:
        for key, action in rows:
            assert key in html and action in html


def test_real_x11_window_under_xvfb(tmp_path):
    """The viewer in a real X window (Xvfb), not only offscreen."""
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (sh dev test installs it)")
    out = tmp_path / "x11.png"
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["CNO_ANNOTATE_STORE"] = str(tmp_path / "store")
    result = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-m", "cno_annotate",
                             "view", "--sample", "--screenshot", str(out), "--size", "1000x700"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "left: STIR coronal whole body (4 stations) (ready)" in result.stdout
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert (image.width(), image.height()) == (1000, 700)


def test_screenshot_command_writes_a_png_offscreen(tmp_path):
    out = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CNO_ANNOTATE_STORE": str(tmp_path / "store")}
    result = subprocess.run([sys.executable, "-m", "cno_annotate", "view", "--sample", "--screenshot", str(out),
                             "--size", "900x600"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert (image.width(), image.height()) == (900, 600)
    colours = {image.pixel(x, y) for x in range(0, 900, 7) for y in range(0, 600, 7)}
    assert len(colours) > 50  # images, not a blank window

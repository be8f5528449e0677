"""A second new-reader trial of the reading workstation (issue 12): what it found, in the real window.

The trial read a new sample (seed 37, five stations, 160 x 160, 24 slices) from the README only,
driving the window under Xvfb with X events. Each test here drives the window from where the focus
lands at open (keys to the focused widget, clicks and the wheel on the widgets a reader would use)
and checks what is painted or shown.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QPoint, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from tests.gui_keys import focused as _focused  # noqa: E402
from tests.gui_keys import key as _key  # noqa: E402

pytestmark = pytest.mark.gui


def _crosshair_column_drawn(view, tmp_path, name: str) -> bool:
    """Whether the grabbed view shows the crosshair's vertical line (its yellow dashes) where the point is."""
    grab = view.grab().toImage()
    grab.save(str(tmp_path / f"{name}.png"))
    x = int(np.floor(view.image_to_widget(*view.state.lps_to_screen(view.state.point)).x()))
    if not 0 <= x < grab.width():
        return False
    ratio = grab.devicePixelRatio()
    column = round(x * ratio)
    yellow = [y for y in range(grab.height())
              if (c := QColor(grab.pixel(column, y))).red() > 150 and c.green() > 120 and c.blue() < 90]
    return len(yellow) > grab.height() // 4


def test_keyboard_zoom_keeps_the_crosshair_in_view(open_viewer, qtbot, tmp_path):
    """+ after going to a bone unit near the edge of the image zooms about the crosshair: it stays in view.

    The trial clicked the left distal radius on the skeleton (the views went there), pressed + a few times
    and found the crosshair (and the radius) zoomed out of the view: + zoomed about the view's centre.
    """
    window = open_viewer(reader="dr-z", size=(1280, 800))
    v = window.panels["left"].view
    state = window.session.views["left"]
    assert _focused() is v
    checklist = window.checklist
    qtbot.mouseClick(checklist, Qt.LeftButton, pos=checklist.unit_point("radius.distal:L").toPoint())
    target = np.array(state.point, float)
    assert _crosshair_column_drawn(v, tmp_path, "unit")
    fit = state.pixels_per_mm()
    for _ in range(5):
        _key(qtbot, Qt.Key_Plus)
    assert state.zoom is not None and state.zoom > 2.5 * fit
    np.testing.assert_allclose(state.point, target)
    assert state.shows(target, margin=0.02), state.image_to_viewport(*state.lps_to_screen(target))
    assert _crosshair_column_drawn(v, tmp_path, "zoomed")
    _key(qtbot, Qt.Key_Minus)
    assert state.shows(target, margin=0.02)
    window.loader.wait(5000)


def _scroll_to(qtbot, view, lps) -> None:
    """Arrow keys (from the focused widget) until the view's slice holds the LPS point."""
    state = view.state
    ijk = state.volume.lps_to_index(np.asarray(lps, float))
    want = int(np.clip(np.round({2 - k: ijk[k] for k in range(3)}[state.mapping.slice_axis]),
                       0, state.mapping.slices - 1))
    for _ in range(state.mapping.slices):
        if state.slice_index == want:
            return
        _key(qtbot, Qt.Key_Down if state.slice_index < want else Qt.Key_Up)
    assert state.slice_index == want


def test_a_thoracic_vertebra_is_proposed_as_a_vertebra_not_the_sternum(open_viewer, qtbot, tmp_path):
    """M, a click on the T5 vertebral body, Enter: the site taken is a thoracic vertebra (it was the xiphoid).

    The schematic skeleton is a front view: the sternum lies over the thoracic spine, and the proposal
    ignored depth. The sample's spine lies behind the body's midplane, its sternum in front.
    """
    from cno_annotate.phantom import vertebra_centres

    window = open_viewer(reader="dr-s", size=(1280, 800))
    v = window.panels["left"].view
    centres = vertebra_centres()
    for name in ("T5", "T2"):
        _scroll_to(qtbot, v, centres[name][0])
        _key(qtbot, Qt.Key_M)
        count = len(window.read_session.read.lesions)
        spot = v.image_to_widget(*v.state.lps_to_screen(centres[name][0]))
        qtbot.mouseClick(v, Qt.LeftButton, pos=spot.toPoint())
        qtbot.waitUntil(lambda: len(window.read_session.read.lesions) > count)  # noqa: B023 (waited for here)
        _key(qtbot, Qt.Key_Return)  # the proposed site
        lesion = window.read_session.read.lesions[-1]
        site = window.read_session.taxonomy.site(lesion.site_id)
        window.grab().save(str(tmp_path / f"{name}.png"))
        assert site.bone == "vertebra" and site.group == "spine.thoracic", (name, lesion.site_id)
        assert abs(int(site.segment[1:]) - int(name[1:])) <= 1, (name, lesion.site_id)
        _key(qtbot, Qt.Key_Escape)
    sternum = (0.0, -72.0, 330.0)
    _scroll_to(qtbot, v, sternum)
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(*v.state.lps_to_screen(np.array(sternum))).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 3)
    _key(qtbot, Qt.Key_Return)
    assert window.read_session.read.lesions[-1].site_id.startswith("sternum")
    window.loader.wait(5000)


def _press_enter_in_next_dialog(qtbot) -> None:
    def press() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(20, press)
            return
        qtbot.keyClick(dialog, Qt.Key_Return)

    QTimer.singleShot(20, press)


def test_the_read_header_and_status_bar_say_what_the_read_is(open_viewer, qtbot, tmp_path):
    """Opened only: 'not started' (no read is stored); after the first mark 'draft'; Submit says it in the status bar.

    The trial opened a case and read 'Reader ... · draft' before any change (none was stored); after
    Submit the status bar still said 'Lesion L7 deleted (Ctrl+Z brings it back)' and the skeleton's
    button 'All units reviewed' with 135 units not reviewed.
    """
    window = open_viewer(reader="dr-h", size=(1280, 800))
    panel = window.lesion_panel
    v = window.panels["left"].view
    assert "not started" in panel.header.text() and "draft" not in panel.header.text()
    assert panel.header.text().startswith("Reader dr-h")
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    qtbot.keyClicks(_focused(), "distal fem")
    _key(qtbot, Qt.Key_Return)
    _key(qtbot, Qt.Key_R)
    for digit in (Qt.Key_2, Qt.Key_1, Qt.Key_1, Qt.Key_0):
        _key(qtbot, digit)
    assert " · draft · " in panel.header.text()
    qtbot.mouseClick(panel.delete_button, Qt.LeftButton)
    _key(qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert len(window.read_session.read.lesions) == 1
    _press_enter_in_next_dialog(qtbot)
    qtbot.mouseClick(panel.submit_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.read_session.read.status == "submitted")
    window.grab().save(str(tmp_path / "submitted.png"))
    message = window.statusBar().currentMessage()
    assert "submitted" in message.lower() and "Ctrl+Z" not in message, message
    assert " · submitted · " in panel.header.text()
    remaining = window.read_session.remaining_units()
    assert len(remaining) > 100 and window.mark_rest_button.text() == f"Rest: no lesion ({len(remaining)})"
    assert not window.mark_rest_button.isEnabled()  # it said "All units reviewed" with 135 not reviewed
    window.loader.wait(5000)


def test_an_adjudicator_is_named_as_such_in_the_header(qtbot, tmp_path, sample_store):
    """The adjudicator's own read: 'Adjudicator dr-adj · not started', not 'Reader dr-adj · draft'."""
    import shutil

    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate import reading_study as rs
    from cno_annotate.store import Store

    root = tmp_path / "adj"
    shutil.copytree(sample_store.root, root)
    store = Store.open(root)
    rs.create(store, "adj", seed=1)
    rs.add_cases(store, "adj", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "adj", ["dr-a"])
    rs.add_readers(store, "adj", ["dr-adj"], role="adjudicator")
    rs.assign(store, "adj")
    store.close()
    window = MainWindow(root, reader="dr-adj", reading_study="adj")
    window.resize(1280, 800)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    header = window.lesion_panel.header.text()
    assert header.startswith("Adjudicator dr-adj · not started"), header
    window.loader.wait(5000)


def test_a_mark_click_beside_the_image_places_nothing_and_says_why(open_viewer, qtbot, tmp_path):
    """A click in the black beside the image (outside the field of view) places no lesion; the status bar says why.

    The trial clicked where a forearm lay outside the field of view: the lesion was placed at the
    image's edge, 22 mm from where the reader clicked, and the site proposed was the ulna.
    """
    window = open_viewer(reader="dr-o", size=(1280, 800))
    v = window.panels["left"].view
    shown: list[str] = []
    window.statusBar().messageChanged.connect(shown.append)
    left_edge = v.image_to_widget(0.0, -0.5).x()
    assert left_edge > 20  # the fitted slice leaves black beside it
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=QPoint(int(left_edge) - 12, v.height() // 2))
    qtbot.wait(QApplication.styleHints().mouseDoubleClickInterval() + 100)
    window.grab().save(str(tmp_path / "outside.png"))
    assert window.read_session.read.lesions == []
    assert any("outside the image" in m for m in shown), shown
    assert window.mark_action.isChecked()  # still marking: the next click on the image places it
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    window.loader.wait(5000)


def test_one_unreadable_slice_is_said_in_the_singular(qtbot, tmp_path, small_study):
    """'1 slice could not be read' to the reader, '1 file ... its slice has no data' in the log; not '1 slices'."""
    import shutil

    import pydicom
    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate import reading_study as rs
    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store

    folder = tmp_path / "study"
    shutil.copytree(small_study, folder)
    store = Store.open(tmp_path / "store")
    import_paths(store, [folder])
    rs.create(store, "one", seed=1)
    rs.add_cases(store, "one", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "one", ["dr-1"])
    rs.assign(store, "one")
    store.close()
    stir = sorted(p for p in folder.rglob("IM*") if "IR" in pydicom.dcmread(p, stop_before_pixels=True).ScanningSequence)
    stir[len(stir) // 2].unlink()
    window = MainWindow(tmp_path / "store", reader="dr-1", reading_study="one")
    window.resize(1280, 800)
    qtbot.addWidget(window)
    window.show()
    shown: list[str] = []
    window.statusBar().messageChanged.connect(shown.append)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    said = [m for m in shown if "could not be" in m]
    assert said and all(m.endswith(": 1 slice could not be read (hatched in the view)") for m in said), shown
    assert window.panels["left"].view.badge_text().startswith("1 slice missing")
    window.loader.wait(5000)
    log = (tmp_path / "store" / "logs" / "coordinator.log").read_text()
    assert "1 file of this volume could not be used (1 missing): its slice has no data" in log, log


def test_a_study_of_one_series_leaves_the_second_view_empty_not_failed(qtbot, tmp_path):
    """One series (pydicom's enhanced MR): the right view says how to fill it, in the normal colour, not an error.

    The trial opened a one-series third-party study (a Philips MPRAGE) and the right view said in red
    'Cannot show this series: this study has no series to show here' under a selector naming the left
    view's series.
    """
    import shutil

    from cno_annotate_ui.main_window import MainWindow
    from cno_annotate_ui.slice_view import TEXT
    from pydicom.data import get_testdata_file

    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(get_testdata_file("emri_small.dcm", download=False), folder / "IM0001")
    store = Store.open(tmp_path / "store")
    import_paths(store, [folder])
    study_uid = store.studies()[0].study_uid
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-1")
    window.resize(1280, 800)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(study_uid)
    right = window.panels["right"]
    state = window.session.views["right"]
    assert window.session.views["left"].ready
    assert state.status == "empty" and "pick one above" in state.message, (state.status, state.message)
    assert right.series.currentIndex() == -1 and right.series.count() == 1
    grab = right.view.grab().toImage()
    grab.save(str(tmp_path / "right.png"))
    colours = {QColor(grab.pixel(x, y)).name() for x in range(0, grab.width(), 2) for y in range(0, grab.height(), 2)}
    assert QColor(255, 120, 120).name() not in colours  # no error red
    assert any(QColor(c).lightness() > 150 for c in colours) and TEXT.lightness() > 150  # the text is painted
    window.loader.wait(5000)


def test_the_status_bar_says_the_polygon_extent_was_set(open_viewer, qtbot, tmp_path):
    """After the polygon closes the status bar says the extent is set, not the drawing instructions any more."""
    window = open_viewer(reader="dr-x", size=(1280, 800))
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    _key(qtbot, Qt.Key_Escape)
    _key(qtbot, Qt.Key_X)
    assert "click each vertex" in window.statusBar().currentMessage()
    for row, col in ((295.0, 35.0), (295.0, 45.0), (306.0, 46.0), (306.0, 34.0)):
        qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(row, col).toPoint())
    _key(qtbot, Qt.Key_Return)
    lesion = window.read_session.read.lesions[0]
    assert lesion.extent["kind"] == "polygon"
    window.grab().save(str(tmp_path / "extent.png"))
    message = window.statusBar().currentMessage()
    assert f"Polygon extent of {lesion.lesion_id} set" in message and "click each vertex" not in message, message
    window.loader.wait(5000)


@pytest.mark.parametrize("size", [(1280, 800), (1024, 768)])
def test_the_proposed_site_is_shown_whole(open_viewer, qtbot, tmp_path, size):
    """After a mark click the proposal row ('Distal femur ... Enter takes it') fits the panel: no scroll bar, no cut.

    The trial read 'Xiphoid process (proposed from the p' above a horizontal scroll bar.
    """
    window = open_viewer(reader="dr-p", size=size)
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(300.0, 40.0).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    results = window.lesion_panel.site_picker.results
    qtbot.waitUntil(results.isVisible)
    qtbot.wait(50)
    window.lesion_panel.grab().save(str(tmp_path / f"proposal-{size[0]}.png"))
    item = results.item(0)
    assert "Enter" in item.text()
    text_width = results.fontMetrics().horizontalAdvance(item.text())
    assert not results.horizontalScrollBar().isVisible()
    shown = results.visualItemRect(item)
    assert shown.width() <= results.viewport().width()
    lines = -(-text_width // max(1, results.viewport().width() - 8))
    assert shown.height() >= lines * results.fontMetrics().height(), (text_width, shown, results.viewport().width())
    window.loader.wait(5000)


def test_a_lesion_clicked_in_the_list_takes_the_grade_digits(open_viewer, qtbot, tmp_path):
    """A click on a lesion's row puts the keyboard on its first grade: a digit grades it (and moves on), not the
    STIR's window preset; Enter gives the keyboard back to the image, whose arrows move the slice, not the list.

    The trial placed two lesions, clicked the first one's row to grade it and typed 2: the STIR's window went to
    its second preset and the lesion stayed ungraded (the list had the keyboard; digits are presets on the image).
    """
    window = open_viewer(reader="dr-g", size=(1280, 800))
    panel = window.lesion_panel
    v = window.panels["left"].view
    state = window.session.views["left"]
    for column in (300.0, 280.0):  # two lesions, named and sided, left ungraded
        count = len(window.read_session.read.lesions)
        _key(qtbot, Qt.Key_M)
        qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(column, 40.0).toPoint())
        qtbot.waitUntil(lambda: len(window.read_session.read.lesions) > count)  # noqa: B023 (waited for here)
        qtbot.keyClicks(_focused(), "dist fem")
        _key(qtbot, Qt.Key_Return)
        _key(qtbot, Qt.Key_R)
        _key(qtbot, Qt.Key_Escape)
    assert _focused() is v
    window_before, slice_before = state.window, state.slice_index
    first = panel.lesions.item(0)
    qtbot.mouseClick(panel.lesions.viewport(), Qt.LeftButton, pos=panel.lesions.visualItemRect(first).center())
    assert panel.selected == window.read_session.read.lesions[0].lesion_id
    _key(qtbot, Qt.Key_2)
    _key(qtbot, Qt.Key_1)
    window.grab().save(str(tmp_path / "graded-from-the-list.png"))
    lesion = window.read_session.read.lesions[0]
    assert list(lesion.grades.values())[:2] == [2, 1], lesion.grades
    assert state.window == window_before  # no preset was applied
    assert not window.read_session.read.lesions[1].grades
    _key(qtbot, Qt.Key_Return)
    assert _focused() is v
    _key(qtbot, Qt.Key_Down)
    assert state.slice_index != slice_before and panel.lesions.currentRow() == 0
    first = panel.lesions.item(0)  # the selected lesion's row clicked again: its first grade again
    qtbot.mouseClick(panel.lesions.viewport(), Qt.LeftButton, pos=panel.lesions.visualItemRect(first).center())
    _key(qtbot, Qt.Key_0)
    assert list(window.read_session.read.lesions[0].grades.values())[:2] == [0, 1]
    assert state.window == window_before
    window.loader.wait(5000)

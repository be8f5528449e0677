"""The bone-unit checklist in the real window: colours by state, click to go, mark the rest in one step."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QPoint, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from cno_annotate.display.checklist import unit_target  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(open_viewer):
    w = open_viewer(reader="dr-test", size=(1280, 800))
    yield w
    w.loader.wait(5000)


def _colour(window, unit: str) -> QColor:
    """The colour painted at a unit's place in the checklist (grabbed pixels)."""
    checklist = window.checklist
    point = checklist.unit_point(unit)
    image = checklist.grab().toImage()
    ratio = image.devicePixelRatio()
    return image.pixelColor(QPoint(int(point.x() * ratio), int(point.y() * ratio)))


def _close(a: QColor, b: QColor, tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in ((a.red(), b.red()), (a.green(), b.green()), (a.blue(), b.blue())))


def _answer_next_dialog(qtbot, key=Qt.Key_Return) -> None:
    """Press a key in the confirmation that is about to open (as the reader would)."""

    def press() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(20, press)
            return
        qtbot.keyClick(dialog, key)

    QTimer.singleShot(20, press)


def test_mark_remaining_is_one_shortcut_one_enter_and_one_undo(window, qtbot, tmp_path):
    """Ctrl+Shift+N from where the keyboard is at open, Enter in the one confirmation; Ctrl+Z undoes it all."""
    from cno_annotate_ui.checklist import STATE_COLOURS

    from cno_annotate.display.checklist import UnitState

    green = STATE_COLOURS[UnitState.NO_LESION]
    before = _colour(window, "tibia.proximal:L")
    assert not _close(before, green)
    focus = QApplication.focusWidget()
    assert focus is window.active_view()
    _answer_next_dialog(qtbot)
    qtbot.keyClick(focus, Qt.Key_N, Qt.ControlModifier | Qt.ShiftModifier)
    qtbot.waitUntil(lambda: bool(window.read_session.read.unit_marks), timeout=3000)
    marks = window.read_session.read.unit_marks
    assert len(marks) == 136 and set(marks.values()) == {"no_lesion"}
    window.checklist.grab().save(str(tmp_path / "checklist-marked.png"))
    assert _close(_colour(window, "tibia.proximal:L"), green)
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.active_view(), timeout=3000)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Z, Qt.ControlModifier)
    assert window.read_session.read.unit_marks == {}
    assert _close(_colour(window, "tibia.proximal:L"), before, 8)


def test_declining_the_confirmation_marks_nothing(window, qtbot):
    _answer_next_dialog(qtbot, Qt.Key_Escape)
    window.mark_rest_button.click()
    assert window.read_session.read.unit_marks == {}
    assert not window.read_session.stored  # nothing written: opening a case still leaves no read


def test_a_click_on_a_unit_moves_the_views_to_it(window, qtbot):
    state = window.session.views["left"]
    start = state.point.copy()
    point = window.checklist.unit_point("tibia.distal:R")
    qtbot.mouseClick(window.checklist, Qt.LeftButton, pos=point.toPoint())
    expected = unit_target(state.volume, window.read_session.taxonomy, "tibia.distal:R", start)
    np.testing.assert_allclose(state.point, expected, atol=1e-6)
    assert abs(state.point[2] - (-772.4)) < 60 and state.point[0] < 0  # the sample's right distal tibia
    np.testing.assert_allclose(window.session.views["right"].point, state.point)  # linked
    assert QApplication.focusWidget() is window.active_view()


def test_a_lesion_colours_its_unit(window, qtbot):
    from cno_annotate_ui.checklist import STATE_COLOURS

    from cno_annotate.display.checklist import UnitState

    session = window.read_session
    lesion = session.add_lesion((-77.0, 0.0, -420.0), window.session.views["left"].volume.volume_id, (40, 337, 6))
    session.update_lesion(lesion, site_id="femur.distal", side="R")
    assert _close(_colour(window, "femur.distal:R"), STATE_COLOURS[UnitState.LESION])
    assert "(135)" in window.mark_rest_button.text()


def test_the_keyboard_path_of_a_typical_lesion_is_eight_actions(window, qtbot):
    """M, a click on the bone, Enter takes the proposed site, Enter the proposed side, one digit per grade."""
    from cno_annotate.display.checklist import propose_site

    view = window.active_view()
    state = window.session.views["left"]
    truth_l1 = np.array([-77.07, 0.0, -420.17])  # the sample's right distal femur lesion
    window.session.set_point("left", truth_l1)
    row, col = state.lps_to_screen(truth_l1)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_M)  # 1
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(row, col).toPoint())  # 2
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Return)  # 3: the proposed site
    assert QApplication.focusWidget() is window.lesion_panel.side
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Return)  # 4: the proposed side
    for digit in (Qt.Key_2, Qt.Key_3, Qt.Key_1, Qt.Key_0):  # 5-8
        qtbot.keyClick(QApplication.focusWidget(), digit)
    (lesion,) = window.read_session.read.lesions
    assert (lesion.site_id, lesion.side) == ("femur.distal", "R")
    assert propose_site(state.volume, window.read_session.taxonomy, lesion.position) == ("femur.distal", "R")
    assert lesion.grades == {"marrow_hyperintensity": 2, "signal_extension": 3, "soft_tissue_periosteal": 1,
                             "bony_expansion": 0}
    assert QApplication.focusWidget() is view


def test_typing_replaces_the_proposed_site(window, qtbot):
    view = window.active_view()
    state = window.session.views["left"]
    row, col = state.lps_to_screen(np.array([-77.07, 0.0, -420.17]))
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_M)
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(row, col).toPoint())
    for char in "patel":
        qtbot.keyClicks(QApplication.focusWidget(), char)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Return)
    (lesion,) = window.read_session.read.lesions
    assert lesion.site_id == "patella"


def test_marking_the_rest_that_another_window_refused_says_it_was_not_done(window, qtbot):
    """The read changed in another window: the refusal stays on the status bar, not 'N units marked no lesion'."""
    from cno_annotate.annotation.reads import ReadSession

    session = window.read_session
    volume = window.session.views["left"].volume.volume_id
    session.add_lesion((-77.0, 0.0, -420.0), volume, (40, 337, 6))  # the read is stored now
    other = ReadSession.open(window.store, session.read.read_id, "dr-test")  # a second window on the same read
    other.add_lesion((77.0, 0.0, -420.0), volume, (80, 337, 6))
    _answer_next_dialog(qtbot)
    window.mark_rest_button.click()
    message = window.statusBar().currentMessage()
    assert window.read_session.read.unit_marks == {}  # refused: nothing marked
    assert "marked no lesion" not in message
    assert "changed in another window" in message and "no unit was marked" in message.lower(), message

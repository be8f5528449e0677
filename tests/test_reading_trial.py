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

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QColor, QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

pytestmark = pytest.mark.gui


def _focused():
    return QApplication.focusWidget()


def _key(qtbot, key, modifiers=Qt.NoModifier):
    qtbot.keyClick(_focused(), key, modifiers)


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

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


def _focused():
    return QApplication.focusWidget()


def _key(qtbot, key, modifiers=Qt.NoModifier):
    qtbot.keyClick(_focused(), key, modifiers)


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
        window.close()
        QApplication.instance().quit()

    QTimer.singleShot(0, look)
    assert run_viewer(store_dir, None, False, None) == 0
    frame, screen = seen["frame"], seen["screen"]
    assert screen.height() < 900, "the test needs a screen lower than the default window"
    assert screen.top() <= frame.top() and frame.bottom() <= screen.bottom(), (frame, screen)  # Submit, status bar
    # the offscreen test screen (800 wide) is narrower than the window can be: then no wider than it must
    assert frame.right() <= max(screen.right(), screen.left() + seen["least"].width() + 16), (frame, screen)

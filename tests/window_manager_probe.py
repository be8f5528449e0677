"""Open the viewer as `cno-annotate view` does, under a real window manager, and print where its frame ended up.

Run by tests/test_viewer.py inside xvfb-run with openbox: prints ``frame X Y W H free X Y W H`` once the window
manager's frame is known and the window fits the free area of the screen, or at the deadline.
"""

from __future__ import annotations

import sys
import time

from cno_annotate_ui.app import run_viewer
from cno_annotate_ui.main_window import MainWindow
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

DEADLINE = time.monotonic() + 30  # a deadline for the window manager, not a timing under test


def _look() -> None:
    windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    if windows:
        window = windows[0]
        frame, free = window.frameGeometry(), window.screen().availableGeometry()
        framed = frame.height() > window.height()  # the window manager's title bar is known
        if (framed and free.contains(frame)) or time.monotonic() > DEADLINE:
            print("frame", *frame.getRect(), "free", *free.getRect(), "framed" if framed else "unframed", flush=True)
            window.loader.wait(10000)
            window.close()
            return
    QTimer.singleShot(50, _look)


QTimer.singleShot(0, _look)
sys.exit(run_viewer(sys.argv[1], None, True, None))

"""Count the reader's actions (clicks + keys + drags) for data entry, driving the real window.

A scripted reading of the bundled sample study, offscreen, through the same events a reader
makes (QTest key and mouse events sent to whatever has the keyboard, from where the focus
lands at open). Navigation to the lesion (scrolling) is reading, not data entry, and is not
counted. Prints each path with its count and its aim; exits 1 if a path misses its aim.

    QT_QPA_PLATFORM=offscreen python bench/reading_actions.py

Paths measured:

- a typical lesion on the keyboard path: mark, place, site, side and four grades;
- the same lesion with the site typed (the path before the site proposal);
- "mark all remaining units no lesion";
- one unit marked by hand in the "Bone units without a lesion" box (the path before the
  checklist), to compare with 136 units.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CNO_ANNOTATE_CONFIG", tempfile.mkdtemp(prefix="cno-bench-config-"))  # default keymap

from PySide6.QtCore import QPoint, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_scans" / "wbmri-cno-01" / "DICOM"
L1 = np.array([-77.07, 0.0, -420.17])  # the right distal femur of the sample (a lesion there in ground_truth.json)


class Reader:
    """Sends keys and clicks as a reader would, and counts them."""

    def __init__(self, app: QApplication) -> None:
        self.app, self.actions = app, 0

    def key(self, key, modifiers=Qt.NoModifier, text: str = "") -> None:
        """One key press (with its modifiers) to whatever has the keyboard."""
        QTest.keyClick(QApplication.focusWidget(), key, modifiers)
        self.actions += 1
        self.settle()

    def type(self, text: str) -> None:
        """Type text, one action per character."""
        for char in text:
            QTest.keyClicks(QApplication.focusWidget(), char)
            self.actions += 1
        self.settle()

    def click(self, widget, pos: QPoint) -> None:
        """One left click."""
        QTest.mouseClick(widget, Qt.LeftButton, Qt.NoModifier, pos)
        self.actions += 1
        self.settle()

    def answer_next_dialog(self, key=Qt.Key_Return) -> None:
        """Press a key in the confirmation about to open (counted when pressed)."""

        def press() -> None:
            dialog = QApplication.activeModalWidget()
            if dialog is None:
                QTimer.singleShot(10, press)
                return
            QTest.keyClick(dialog, key)
            self.actions += 1

        QTimer.singleShot(10, press)

    def settle(self) -> None:
        """Let the window process what it was sent (and a pending mark click wait out its double click)."""
        for _ in range(3):
            self.app.processEvents()
        QTest.qWait(10)


def open_window(app: QApplication, folder: Path):
    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store

    store = Store.open(folder / "store")
    import_paths(store, [SAMPLE])
    study = store.studies()[0].study_uid
    store.close()
    window = MainWindow(folder / "store", reader="bench")
    window.resize(1280, 800)
    window.show()
    loaded = []
    window.all_loaded.connect(lambda: loaded.append(True))
    window.select_study(study)
    while not loaded:
        app.processEvents()
        QTest.qWait(20)
    return window


def go_to(window, lps) -> None:
    """Navigation (not counted): the lesion's slice in the left view."""
    window.session.set_point("left", lps)


def lesion_path(app, window, typed_site: str | None) -> tuple[int, object]:
    """Mark, place, name the site (proposed, or typed), side, four grades: (actions, lesion)."""
    reader = Reader(app)
    view, state = window.active_view(), window.session.views["left"]
    go_to(window, L1)
    row, col = state.lps_to_screen(L1)
    reader.key(Qt.Key_M)
    reader.click(view, view.image_to_widget(row, col).toPoint())
    if typed_site:
        reader.type(typed_site)
    while not window.read_session.read.lesions or window.lesion_panel.current_lesion() is None:
        reader.settle()
    reader.key(Qt.Key_Return)  # the site
    reader.key(Qt.Key_Return)  # the proposed side
    for digit in (Qt.Key_2, Qt.Key_3, Qt.Key_1, Qt.Key_0):
        reader.key(digit)
    lesion = window.read_session.read.lesions[-1]
    assert QApplication.focusWidget() is view, "the keyboard is not back on the image"
    return reader.actions, lesion


def mark_remaining_path(app, window) -> tuple[int, int]:
    """Mark every unit not yet reviewed: (actions, units marked)."""
    reader = Reader(app)
    before = len(window.read_session.read.unit_marks)
    reader.answer_next_dialog()
    reader.key(Qt.Key_N, Qt.ControlModifier | Qt.ShiftModifier)
    while reader.actions < 2:
        reader.settle()
    return reader.actions, len(window.read_session.read.unit_marks) - before


def one_unit_by_hand_path(app, window) -> tuple[int, int]:
    """The path before the checklist: click the unit box, type the site, Enter, choose the side, click No lesion."""
    reader = Reader(app)
    panel = window.lesion_panel
    before = len(window.read_session.read.unit_marks)
    search = panel.unit_picker.search
    reader.click(search, search.rect().center())
    reader.type("dist rad")
    reader.key(Qt.Key_Return)
    side = panel.unit_side
    reader.click(side, side.rect().center())
    reader.key(Qt.Key_Down)
    reader.key(Qt.Key_Return)
    button = next(b for b in panel.units_box.findChildren(type(panel.submit_button)) if b.text() == "No lesion")
    reader.click(button, button.rect().center())
    return reader.actions, len(window.read_session.read.unit_marks) - before


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    results = []
    with tempfile.TemporaryDirectory(prefix="cno-bench-") as tmp:
        window = open_window(app, Path(tmp) / "a")
        actions, lesion = lesion_path(app, window, None)
        assert (lesion.site_id, lesion.side) == ("femur.distal", "R") and len(lesion.grades) == 4, lesion
        results.append(("typical lesion, keyboard path (site proposed)", actions, 8))
        window.read_session.delete_lesion(lesion.lesion_id)
        actions, lesion = lesion_path(app, window, "dist fem")
        assert (lesion.site_id, lesion.side) == ("femur.distal", "R") and len(lesion.grades) == 4, lesion
        results.append(("typical lesion, site typed ('dist fem')", actions, None))
        actions, units = one_unit_by_hand_path(app, window)
        assert units == 1, units
        results.append(("one unit 'no lesion' by hand (unit box)", actions, None))
        actions, units = mark_remaining_path(app, window)
        assert units == 134, units
        results.append((f"mark all remaining units no lesion ({units} units)", actions, 3))
        window.close()
    missed = False
    print(f"{'path':58} actions  aim")
    for name, actions, aim in results:
        ok = aim is None or actions <= aim
        missed |= not ok
        print(f"{name:58} {actions:7}  {aim if aim is not None else '-':>3}{'' if ok else '  MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

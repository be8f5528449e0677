"""The study list at a small screen's width: every row shows what identifies its case (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store

pytest.importorskip("PySide6")
pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def three_studies(tmp_path_factory) -> Path:
    """A store with three small studies (dates, patient IDs and descriptions as the generator writes them)."""
    folder = tmp_path_factory.mktemp("three-studies")
    store = Store.open(folder / "store")
    for seed in (1, 2, 3):
        generate_study(folder / f"study{seed}", StudyPlan(stations=2, slices=4, matrix=32, seed=seed))
        import_paths(store, [folder / f"study{seed}"])
    store.close()
    return folder / "store"


def _needed_height(widget, text: str, width: int) -> int:
    """Pixels of height ``text`` takes wrapped at word boundaries within ``width``."""
    from PySide6.QtCore import QRect, Qt

    return widget.fontMetrics().boundingRect(QRect(0, 0, width, 10_000), Qt.TextWordWrap, text).height()


def test_at_1024_by_768_every_study_row_shows_its_whole_text(qtbot, three_studies, tmp_path):
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(three_studies)
    qtbot.addWidget(window)
    window.resize(1024, 768)
    window.show()
    qtbot.waitExposed(window)
    rows = window.study_list
    assert rows.count() == 3
    window.grab().save(str(tmp_path / "study-list-1024x768.png"))
    viewport = rows.viewport().width()
    for n in range(rows.count()):
        item = rows.item(n)
        text = item.text()
        assert any(word.startswith("UZ") for word in text.split()), text  # the patient ID is in the row's text
        shown = rows.visualItemRect(item)
        assert shown.left() >= 0 and shown.right() < viewport, (text, shown, viewport)  # no part beyond the list
        # tall enough for the whole text wrapped at the row's width (the delegate's margins: a few pixels)
        assert shown.height() >= _needed_height(rows, text, shown.width() - 8), (text, shown)
        assert text in item.toolTip()  # and the whole text on hovering, as the row is narrow
    assert rows.horizontalScrollBar().maximum() == 0  # nothing to scroll to: nothing is hidden to the right

"""A study whose files are missing is visibly marked, and its series say why they cannot be shown."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume

RELOCATE_HINT = "if the folder moved, run: cno-annotate relocate OLD NEW"


@pytest.fixture
def moved(small_study, tmp_path):
    """A store whose study folder was moved after import (every file missing)."""
    shutil.copytree(small_study, tmp_path / "before")
    store = Store.open(tmp_path / "s")
    import_paths(store, [tmp_path / "before"])
    (tmp_path / "before").rename(tmp_path / "after")
    yield store
    store.close()


def test_loading_a_series_whose_files_are_missing_says_how_many_and_how_to_relocate(moved):
    stack = next(v for v in moved.volumes() if v.kind == "stack")
    with pytest.raises(CnoError) as caught:
        load_volume(moved, stack.volume_id)
    message = str(caught.value)
    assert f"{stack.shape[0]} files of this series are missing; {RELOCATE_HINT}" in message, message
    assert "FileNotFoundError" not in message and "before" not in message


def _window(qtbot, root, reader=None):
    pytest.importorskip("PySide6", reason="the viewer needs the ui extra")
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(root, reader=reader)
    window.resize(1280, 800)
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.mark.gui
def test_the_missing_files_warning_comes_first_in_the_study_list(moved, qtbot):
    window = _window(qtbot, moved.root)
    n_files = sum(s.missing_files for s in moved.studies())
    item = window.study_list.item(0)
    assert item.text().startswith(f"{n_files} files missing"), item.text()
    assert not item.icon().isNull() and "relocate" in item.toolTip()


@pytest.mark.gui
def test_a_series_with_missing_files_shows_the_count_and_the_relocate_command(moved, qtbot, tmp_path):
    window = _window(qtbot, moved.root)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(moved.studies()[0].study_uid)
    view = window.session.views["left"]
    assert view.status == "error"
    assert "files of this whole-body volume are missing" in view.message and RELOCATE_HINT in view.message
    assert "FileNotFoundError" not in view.message
    window.grab().save(str(tmp_path / "missing.png"))


@pytest.mark.gui
def test_long_error_text_stays_inside_the_view(sample_store, qtbot, tmp_path):
    window = _window(qtbot, sample_store.root)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(sample_store.studies()[0].study_uid)
    panel = window.panels["left"].view
    long_word = "/very/long/folder/" + "x" * 300 + "/IM0001.dcm"
    window.session.set_error("left", f"no slice could be read: {long_word}: FileNotFoundError")
    panel.repaint()
    image = panel.grab().toImage()
    image.save(str(tmp_path / "long-error.png"))
    pixels = np.array([[image.pixelColor(x, y).getRgb()[:3] for x in range(image.width())]
                       for y in range(image.height())])
    reddish = (pixels[..., 0] > 200) & (pixels[..., 1] < 170)
    inked_rows = reddish.any(axis=1).astype(int)
    lines = int(np.sum(np.diff(inked_rows) == 1))  # bands of text, one per painted line
    from PySide6.QtGui import QFont, QFontMetrics

    metrics = QFontMetrics(QFont(panel.font().family(), 11))
    needed = metrics.horizontalAdvance(long_word) / (image.width() - 24)
    assert lines >= needed + 2, (lines, needed)  # the long path is wrapped, not cut off at both edges

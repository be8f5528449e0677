"""The first STIR image is painted from the first station, before the whole-body composition ends.

Issue 12 (measured aims): process start to the first image painted is timed in bench/; this
checks what that first paint shows (the first station's real pixels, on the final geometry)
and that the view is refined to the composed volume when composition ends, keeping what the
reader did meanwhile.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

import cno_annotate.volumes as volumes  # noqa: E402
from cno_annotate.store import Store  # noqa: E402
from cno_annotate.volumes import load_volume  # noqa: E402
from tests.test_viewer import _agreement  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def cold_store(tmp_path, sample_store):
    """A copy of the sample store without cached composed volumes (a cold start composes)."""
    store_dir = tmp_path / "store"
    shutil.copytree(sample_store.root, store_dir)
    shutil.rmtree(store_dir / "cache", ignore_errors=True)
    return store_dir


@pytest.fixture
def held_after_first_station(monkeypatch):
    """Hold composition before it reads a second station until the test releases it."""
    gate, reads = threading.Event(), []
    read = volumes._read_stack

    def gated(store, row, volume, progress):
        reads.append(row.volume_id)
        if len(reads) >= 2:
            gate.wait(60)
        return read(store, row, volume, progress)

    monkeypatch.setattr(volumes, "_read_stack", gated)
    yield gate
    gate.set()


def test_first_paint_shows_the_first_station_then_the_composed_volume(qtbot, cold_store, held_after_first_station,
                                                                      tmp_path):
    from cno_annotate_ui.main_window import MainWindow

    store = Store.open(cold_store)
    stir = next(r for r in store.volumes() if r.kind == "composed" and r.role == "STIR")
    store.close()
    window = MainWindow(cold_store)
    window.resize(1200, 800)
    qtbot.addWidget(window)
    window.show()
    state, v = window.session.views["left"], window.panels["left"].view
    window.select_study(window.store.studies()[0].study_uid)
    qtbot.waitUntil(lambda: state.previewing, timeout=30000)

    # First paint: the composed grid, the first station's real voxels, the rest still to come.
    v.repaint()
    v.grab().save(str(tmp_path / "first-paint.png"))
    assert state.volume.volume_id == stir.volume_id and state.status == "ready"
    assert list(state.volume.shape) == stir.shape
    preview, preview_slice = state.image().copy(), state.slice_index
    filled = preview.any(axis=1)
    assert 0.05 < filled.mean() < 0.5  # one station of the whole body
    assert _agreement(v, state) > 0.95  # the painted pixels are those voxels, windowed
    assert window.progress.isVisible()  # and the reader sees that loading goes on

    # The reader scrolls before composition ends; the refined view keeps the slice.
    window.session.scroll("left", 1)
    slice_index = state.slice_index
    held_after_first_station.set()
    qtbot.waitUntil(lambda: not state.previewing and not window._pending, timeout=60000)
    v.repaint()
    v.grab().save(str(tmp_path / "refined.png"))
    assert state.slice_index == slice_index

    store = Store.open(cold_store)
    composed = load_volume(store, stir.volume_id, use_cache=False)
    store.close()
    np.testing.assert_array_equal(state.volume.array, composed.array)
    assert _agreement(v, state) > 0.95  # the refined paint is the composed volume
    from cno_annotate.display.planes import extract

    final = extract(composed.array, state.mapping, preview_slice)
    same_rows = np.all(preview == final, axis=1)
    assert same_rows[filled].mean() > 0.7  # the first paint's rows were already the final voxels
    assert state.missing is not None  # missing slices are found on the finished volume
    window.loader.wait(5000)


def test_a_preset_chosen_on_the_first_station_stays_that_preset_on_the_composed_volume(
        qtbot, cold_store, held_after_first_station):
    """New-user trial: key 2 ("STIR: oedema") pressed while the first station showed; when composition ended
    the selector said "Custom" and the window kept the first station's numbers, as if the reader had dragged it.
    A preset chosen meanwhile is that preset of the composed volume (a window the reader dragged stays as is)."""
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    window = MainWindow(cold_store)
    window.resize(1200, 800)
    qtbot.addWidget(window)
    window.show()
    state, v, panel = window.session.views["left"], window.panels["left"].view, window.panels["left"]
    window.select_study(window.store.studies()[0].study_uid)
    qtbot.waitUntil(lambda: state.previewing, timeout=30000)
    chosen = list(state.presets)[1]
    QTest.keyClick(v, Qt.Key_2)
    assert panel.preset.currentText() == chosen and state.preset_name == chosen
    held_after_first_station.set()
    qtbot.waitUntil(lambda: not state.previewing and not window._pending, timeout=60000)
    assert panel.preset.currentText() == chosen
    assert state.window == state.presets[chosen]  # the composed volume's own values of that preset
    window.loader.wait(5000)

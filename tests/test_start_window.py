"""The window a start shows is the window as it always was (issue 12, start-up).

A start now reads the left view's volume while Qt and the window load, takes the presets
and missing slices of a cached whole-body volume from beside it instead of scanning it,
opens the study before showing the window and opens the read (lesion panel, markers,
checklist) once the first image is painted. None of that may change what the reader sees:
these tests start the viewer as ``cno-annotate view --screenshot`` does, cold and warm,
and compare everything shown with a window opened the ordinary way (shown, then the study
opened, its volumes loaded in the loader's thread).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from cno_annotate.annotation.reads import ReadSession  # noqa: E402
from cno_annotate.display.missing import find_missing_slices  # noqa: E402
from cno_annotate.display.windowing import AUTO, presets  # noqa: E402
from cno_annotate.store import Store  # noqa: E402
from cno_annotate.volumes import load_volume  # noqa: E402

pytestmark = pytest.mark.gui

READER = "dr-start"
REPO = Path(__file__).resolve().parents[1]
SIZE = (1200, 800)


@pytest.fixture
def read_store(tmp_path, sample_store):
    """A copy of the sample store, no volume cached, with a read of the study: two lesions, one unit marked."""
    root = tmp_path / "store"
    shutil.copytree(sample_store.root, root)
    shutil.rmtree(root / "cache", ignore_errors=True)
    store = Store.open(root)
    study_uid = store.studies()[0].study_uid
    stir = next(r for r in store.volumes() if r.kind == "composed" and r.role == "STIR")
    volume = load_volume(store, stir.volume_id, use_cache=False)
    session = ReadSession.open_or_create(store, study_uid, READER)
    for offset in (-60.0, 60.0):
        centre = volume.index_to_lps(np.array(volume.shape[::-1]) / 2.0) + np.array([offset, 0.0, 0.0])
        session.add_lesion(centre, volume.volume_id, volume.lps_to_index(centre))
    session.mark_unit(next(iter(session.remaining_units())), "no_lesion")
    store.close()
    return root


#: Run in a child process (a start runs the application's event loop and quits it, as the real one does): the
#: viewer started as ``cno-annotate view --screenshot`` does, the lesion panel's state when the left view painted
#: its first image, which thread scanned a volume for its presets and missing slices, and what the window shows.
CHILD = """
import json, sys, threading
from pathlib import Path
import cno_annotate.display.facts as facts
import cno_annotate.display.prefetch as prefetch
import cno_annotate.display.session as session
import cno_annotate_ui.main_window as main_window
import cno_annotate_ui.slice_view as slice_view
from cno_annotate_ui.app import run_viewer
from tests.test_start_window import _shown

scans, at_first_image, opened = [], {}, []
real = facts.volume_facts
for module in (prefetch, session):
    module.volume_facts = lambda volume: (scans.append(threading.current_thread().name), real(volume))[1]
paint = slice_view.SliceView.paintEvent

def recording(view, event):
    paint(view, event)
    if view.name == "left" and view.state.ready and not at_first_image:
        window = view.window()
        at_first_image.update(read=window.read_session is not None, lesions=window.lesion_panel.lesions.count())

slice_view.SliceView.paintEvent = recording

class Recorded(main_window.MainWindow):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        opened.append(self)

main_window.MainWindow = Recorded
code = run_viewer(Path(sys.argv[1]), None, False, Path(sys.argv[2]), (1200, 800), reader=sys.argv[3])
print(json.dumps({"code": code, "scans": scans, "at_first_image": at_first_image, "shown": _shown(opened[0])}))
"""


def _start(store_root, tmp_path, name: str) -> dict:
    """Start the viewer in a new process as ``cno-annotate view --screenshot`` does; what it reported."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", CHILD, str(store_root), str(tmp_path / f"{name}.png"), READER],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    return report


def _reference(store_root, qtbot):
    """The window opened the ordinary way: shown, then the study opened and loaded in the loader's thread."""
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(store_root, reader=READER)
    window.resize(*SIZE)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.select_study(window.store.studies()[0].study_uid)
    return window


def _window(window) -> list[float] | None:
    return None if window is None else [window.level, window.width]


def _shown(window) -> dict:
    """Everything the reader sees of the views, the lesion panel and the checklist."""
    out = {}
    for name in ("left", "right"):
        v, panel = window.session.views[name], window.panels[name]
        out[name] = {
            "label": v.label, "status": v.status, "plane": v.plane, "slice": v.slice_index,
            "window": _window(v.window), "preset": v.preset_name,
            "presets": [[name, _window(w)] for name, w in v.presets.items()],
            "missing": None if v.missing is None else v.missing.lines.tolist(),
            "point": [round(float(x), 6) for x in v.point], "zoom": v.zoom,
            "centre": None if v.centre is None else [round(float(x), 6) for x in v.centre],
            "texts": panel.view.overlay_texts(), "series": panel.series.currentText(),
            "preset_box": panel.preset.currentText(),
        }
    panel = window.lesion_panel
    out["read"] = {
        "header": panel.header.text(), "totals": panel.totals.text(),
        "lesions": [panel.lesions.item(n).text() for n in range(panel.lesions.count())],
        "units": [panel.unit_marks.item(n).text() for n in range(panel.unit_marks.count())],
        "checklist": {unit: str(state) for unit, state in window.checklist.states.items()},
        "rest": window.mark_rest_button.text(),
        "markers": sorted(m.label for m in window.session.markers),
    }
    return out


def test_a_cold_and_a_warm_start_show_what_a_window_opened_the_ordinary_way_shows(read_store, tmp_path, qtbot):
    cold = _start(read_store, tmp_path, "cold")  # composes; keeps the volumes and their facts cached
    assert list((read_store / "cache").glob("*.facts.json"))
    warm = _start(read_store, tmp_path, "warm")  # the cached volumes and their facts
    reference = _shown(_reference(read_store, qtbot))
    assert cold["shown"] == reference
    assert warm["shown"] == reference
    assert len(reference["read"]["lesions"]) == 2 and len(reference["read"]["units"]) == 1
    assert reference["left"]["preset"] == AUTO[0] and reference["left"]["status"] == "ready"

    store = Store.open(read_store)
    stir = load_volume(store, next(r.volume_id for r in store.volumes() if r.kind == "composed" and r.role == "STIR"),
                       use_cache=False)
    store.close()
    assert reference["left"]["window"] == _window(presets(stir.array, stir.role)[AUTO[0]])  # as a scan gives it
    assert reference["left"]["missing"] == find_missing_slices(stir.array).lines.tolist()


def test_a_warm_start_scans_no_volume_and_fills_the_panel_after_the_first_image(read_store, tmp_path):
    cold = _start(read_store, tmp_path, "cold")
    assert "MainThread" not in cold["scans"]  # scanned where the volumes were composed (a child process on Linux)
    assert len(list((read_store / "cache").glob("*.facts.json"))) == 2  # and kept for the next start
    warm = _start(read_store, tmp_path, "warm")
    assert warm["scans"] == []  # presets and missing slices of both whole-body volumes came from beside the cache
    assert warm["at_first_image"] == {"read": False, "lesions": 0}  # the image did not wait for the lesion panel
    assert len(warm["shown"]["read"]["lesions"]) == 2  # which was filled after it


def test_the_loader_takes_a_prefetch_only_for_the_volume_it_loaded(read_store, qtbot):
    from cno_annotate_ui.loader import VolumeLoader

    from cno_annotate.display.prefetch import Prefetch

    store = Store.open(read_store)
    stir, t1 = (next(r.volume_id for r in store.volumes() if r.kind == "composed" and r.role == role)
                for role in ("STIR", "T1"))
    store.close()
    loader = VolumeLoader(read_store)
    prefetch = Prefetch.start(read_store, stir)
    prefetch.join(60)
    loader.adopt(prefetch)
    assert loader.take_loaded("left", t1) is None  # asked for another volume first: the prefetch is dropped
    assert loader.take_loaded("left", stir) is None
    with qtbot.waitSignal(loader.loaded, timeout=60000) as loaded:
        loader.load("left", t1)
    assert loaded.args[1].volume_id == t1
    loader.adopt(prefetch)
    volume, facts = loader.take_loaded("left", stir)
    assert volume.volume_id == stir and facts.presets == presets(volume.array, volume.role)
    loader.wait(5000)


def _opened_as_a_start_opens(store_root, qtbot):
    """A window opened as ``run_viewer`` opens it: the study selected before the window is shown."""
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(store_root, reader=READER)
    window.resize(*SIZE)
    qtbot.addWidget(window)
    window.select_study(window.store.studies()[0].study_uid)
    window.show()
    window.activateWindow()
    return window


def test_an_arrow_pressed_right_after_the_window_opens_moves_the_slice(read_store, qtbot):
    """Down twice at once (no image yet, no read, no key filter): the slice moves two when the image comes."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    reference = _reference(read_store, qtbot)
    at_open = reference.session.views["left"].slice_index
    reference.close()
    shutil.rmtree(read_store / "cache")  # cold: the image comes after the composition
    window = _opened_as_a_start_opens(read_store, qtbot)
    view = window.active_view()
    assert window.focusWidget() is view and not view.state.ready  # where the keyboard is; before the first image
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        qtbot.keyClick(view, Qt.Key_Down)
        qtbot.keyClick(view, Qt.Key_Down)
    assert QApplication.focusWidget() is view
    assert window.session.views["left"].slice_index == at_open + 2
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Up)  # and once the image is there, as always
    assert window.session.views["left"].slice_index == at_open + 1


def test_a_right_view_image_arriving_before_the_first_paint_is_painted_after_the_left_one(read_store, qtbot,
                                                                                            monkeypatch):
    """The STIR (left) is the first image a start paints, also when the right view's first station (a
    preview) or its volume arrives from the loader before the window's first paint (seen in a cold start
    of a 6-station study: the T1's first station came before the window was shown and was painted first)."""
    from cno_annotate_ui import slice_view
    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate.display.facts import volume_facts

    first_images: list[str] = []
    paint = slice_view.SliceView.paintEvent

    def recording(view, event):
        paint(view, event)
        if view.state.ready and view.name not in first_images:
            first_images.append(view.name)

    monkeypatch.setattr(slice_view.SliceView, "paintEvent", recording)
    window = MainWindow(read_store, reader=READER)
    window.resize(*SIZE)
    qtbot.addWidget(window)
    store = Store.open(read_store)
    composed = {r.role: r.volume_id for r in store.volumes() if r.kind == "composed"}
    stir, t1 = (load_volume(store, composed[role], use_cache=False) for role in ("STIR", "T1"))
    store.close()
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.select_study(window.store.studies()[0].study_uid)
        window.loader.loaded.emit("left", stir, volume_facts(stir))  # as the loader delivers them, before
        window.loader.preview.emit("right", t1, volume_facts(t1))  # the window painted anything
    qtbot.waitUntil(lambda: len(first_images) == 2, timeout=10000)
    assert first_images == ["left", "right"]
    assert window.session.views["right"].status == "ready" and window.session.views["right"].label.startswith("T1")

"""Shared fixtures: small generated studies, stores, and the CLI runner."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# GUI tests run offscreen unless a display is asked for explicitly.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from cno_annotate.cli import main
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_scans" / "wbmri-cno-01"


@pytest.fixture(scope="session")
def small_study(tmp_path_factory) -> Path:
    """A 3-station study, 6 slices of 48 x 48 per station (generated once)."""
    out = tmp_path_factory.mktemp("small") / "study"
    generate_study(out, StudyPlan(stations=3, slices=6, matrix=48, seed=3))
    return out


@pytest.fixture(scope="session")
def sample_truth() -> dict:
    """Ground truth of the bundled sample study."""
    return json.loads((SAMPLE / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Store:
    """A store holding the bundled sample study (imported once, read-only use)."""
    store = Store.open(tmp_path_factory.mktemp("sample-store"))
    import_paths(store, [SAMPLE / "DICOM"])
    return store


@pytest.fixture
def sample_copy(tmp_path, sample_store):
    """Copies of the sample store (one study with its series): ``sample_copy("name")`` -> a Store."""
    opened = []

    def copy(name: str = "sample-copy") -> Store:
        target = tmp_path / name
        shutil.copytree(sample_store.root, target)
        opened.append(Store.open(target))
        return opened[-1]

    yield copy
    for s in opened:
        s.close()


@pytest.fixture
def store(tmp_path) -> Store:
    """An empty store."""
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def copy_tree(tmp_path):
    """Copy a folder into the test's temporary folder."""

    def copy(source: Path, name: str = "copy") -> Path:
        target = tmp_path / name
        shutil.copytree(source, target)
        return target

    return copy


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def open_viewer(qtbot, tmp_path, sample_store):
    """Open the main window on a copy of the sample store, with the sample study loaded."""
    from cno_annotate_ui.main_window import MainWindow

    def open_window(reader: str | None = None, size=(1200, 800)):
        store_dir = tmp_path / "viewer-store"
        shutil.copytree(sample_store.root, store_dir)
        window = MainWindow(store_dir, reader=reader)
        window.resize(*size)
        qtbot.addWidget(window)
        window.show()
        with qtbot.waitSignal(window.all_loaded, timeout=20000):
            window.select_study(window.store.studies()[0]["study_uid"])
        return window

    return open_window

"""Start the viewer: ``cno-annotate view`` and the ``cno-annotate-viewer`` GUI script."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cno_annotate import timing
from cno_annotate.display.catalog import bundled_sample_dir, default_pair
from cno_annotate.display.prefetch import Prefetch, can_fork
from cno_annotate.errors import CnoError
from cno_annotate.store import Store
from cno_annotate.store.db import default_store_location
from cno_annotate.store.postgres import is_url

if TYPE_CHECKING:
    from cno_annotate.store.catalog import VolumeRow


def run_viewer(store_dir: Path | str | None, study: str | None, sample: bool, screenshot: Path | None,
               size: tuple[int, int] = (1400, 900), reader: str | None = None,
               reading_study: str | None = None, pacs: str | None = None) -> int:
    """Open the main window; with ``screenshot``, save it once loaded and exit.

    Raises
    ------
    CnoError
        If the store, the study or the sample cannot be opened.
    """
    store_dir = store_dir or default_store_location()  # $CNO_ANNOTATE_STORE may name a server
    store_dir = store_dir if is_url(store_dir) else Path(store_dir)
    package = _package_at(store_dir) if isinstance(store_dir, Path) else None
    if package is not None:  # a reading package offers reader mode only: its own study and reader
        if study or sample or (reader and reader != package.reader) or (
                reading_study and reading_study != package.reading_study):
            raise CnoError(f"{package.folder} is a reading package for {package.reader} in {package.reading_study}: "
                           f"it opens in reader mode only (no other study, reader or sample)")
        store_dir, reader, reading_study = package.store_root, package.reader, package.reading_study
    store = Store.open(store_dir)
    try:
        if reading_study:
            if not reader:
                raise CnoError("reader mode needs --reader ID with --reading-study")
            if study or sample:
                raise CnoError(f"reader mode opens your worklist of {reading_study}: it takes no study or "
                               f"--sample; choose the case in the worklist")
            from cno_annotate import reading_study as rs

            rs.role_of(store, reading_study, reader)
            rs.worklist(store, reading_study, reader)
            if pacs:
                from cno_annotate.pacs import config

                config.get_node(pacs)  # an unknown node is said now, not after the window opened
            study_uid = None
        else:
            _refuse_a_readers_login(store)
            study_uid = _study_to_open(store, study, sample)
        rows = {row.volume_id: row for row in (store.volumes(study_uid) if study_uid is not None else [])}
        pair = [volume_id for volume_id in default_pair(list(rows.values())) if volume_id is not None]
        wanted = [(volume_id, _shape(rows[volume_id])) for volume_id in pair]
    finally:
        store.close()
    # the left view's volume is read while Qt and the window start (most of a start is that)
    timing.mark("study-found")
    if len(wanted) > 1 and not can_fork():
        del wanted[1:]  # the right view's volume too only if a child loads it after the left's
    prefetches = Prefetch.start_several(store_dir, wanted)
    if screenshot is not None and not screenshot.parent.is_dir():
        raise CnoError(f"{screenshot.parent} is not a folder")
    if screenshot is not None and "QT_QPA_PLATFORM" not in os.environ and not _has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    _import_core_before_qt()
    try:
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
    except ImportError:
        raise CnoError("the viewer needs PySide6: pip install 'cno-annotate[ui]'") from None
    timing.mark("qt-imported")
    from cno_annotate_ui.main_window import MainWindow
    timing.mark("window-imported")

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("cno-annotate")
    window = MainWindow(store_dir, reader=reader, reading_study=reading_study,
                        package=package.folder if package is not None else None, pacs=pacs)
    timing.mark("window-built")
    window.resize(*size)
    window.loader.adopt(*prefetches)
    window.will_show()  # the study opens first (the first paint has its image), the read after the image
    result = {"code": 0}
    if screenshot is not None:
        def save() -> None:
            app.processEvents()
            window.repaint()
            if not window.grab().save(str(screenshot)):
                result["code"] = 1
                print(f"cno-annotate: error: cannot write {screenshot}", file=sys.stderr)
            else:
                shown = ", ".join(" ".join(filter(None, (f"{name}:", v.label, f"({v.status})")))
                                  for name, v in window.session.views.items())
                print(f"wrote {screenshot} ({shown})")
            window.close()
            app.quit()

        window.all_loaded.connect(lambda: QTimer.singleShot(50, save))
        window.case_unavailable.connect(lambda *_: QTimer.singleShot(50, save))  # the window says why
        if window.fetcher is not None:  # a case the study PACS did not deliver: the window says why
            window.fetcher.failed.connect(lambda *_: QTimer.singleShot(50, save))
        if study_uid is None and not reading_study:
            QTimer.singleShot(100, save)
    # the study first, then show: the first paint of the window has the left image if it is loaded already
    if reading_study:
        if not window.open_next_case() and screenshot is not None:
            QTimer.singleShot(100, save)  # nothing to load: the worklist is what there is to show
    elif study_uid is not None:
        window.select_study(study_uid)
    if screenshot is None:
        _fit_to_screen(window)  # a screenshot keeps the size asked for
    timing.mark("study-selected")
    if screenshot is None:
        window.showMaximized()  # a reading tool takes the whole screen (the reader may restore it smaller)
    else:
        window.show()
    timing.mark("shown")
    if screenshot is None:
        _fit_to_screen(window)  # again: some platforms know the window manager's frame at once
        _fit_again_once_framed(window)  # on X11 the frame is known once the window manager has framed it
    app.exec()
    return result["code"]


#: The core modules the window imports: imported before PySide6, whose ``__feature__`` import hook reads
#: the source of every module imported after it (looking for PySide6 in it): 30 of ours, about 25 ms of a
#: start (6.5 % fewer instructions to the window's modules). A test keeps the list complete.
CORE_BEFORE_QT = (
    "cno_annotate.annotation.documents", "cno_annotate.annotation.model", "cno_annotate.annotation.reads",
    "cno_annotate.annotation.taxonomy", "cno_annotate.annotation.timing", "cno_annotate.display.checklist",
    "cno_annotate.display.labels", "cno_annotate.display.marking", "cno_annotate.display.measure",
    "cno_annotate.display.overlay", "cno_annotate.display.planes", "cno_annotate.display.regions",
    "cno_annotate.display.session", "cno_annotate.followup", "cno_annotate.keymap", "cno_annotate.reading_study",
    "cno_annotate.wording",
)


def _import_core_before_qt() -> None:
    """Import :data:`CORE_BEFORE_QT` (those already imported cost nothing)."""
    import importlib

    for name in CORE_BEFORE_QT:
        importlib.import_module(name)


def _shape(row: VolumeRow) -> tuple[int, int, int]:
    """A volume's shape as the store knows it (what a child process loads it into)."""
    k, j, i = (int(n) for n in row.shape)
    return (k, j, i)


def _fit_to_screen(window) -> None:
    """Shrink the window, frame included, to the free area of its screen (a 1280 x 800 laptop), and move it there."""
    free = window.screen().availableGeometry()
    frame = window.frameGeometry()
    extra_w, extra_h = frame.width() - window.width(), frame.height() - window.height()
    width, height = min(window.width(), free.width() - extra_w), min(window.height(), free.height() - extra_h)
    if (width, height) != (window.width(), window.height()):
        window.resize(width, height)
    if not free.contains(window.frameGeometry()):
        window.move(free.topLeft())


def _fit_again_once_framed(window) -> None:
    """Fit the window to its screen again, once, when the window manager's frame becomes known.

    On X11 the window manager frames (reparents) the window after ``show()`` returns: until then the
    frame is the window itself, and a window as high as the free area ends below the screen's edge by
    the title bar (the status bar and Submit out of reach at 1280 x 800).
    """
    from PySide6.QtCore import QEvent, QObject  # Qt is imported late: the first volume is read meanwhile

    class FitOnceFramed(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
            if event.type() in (QEvent.Type.Move, QEvent.Type.Resize) and watched is window \
                    and window.frameGeometry().size() != window.size():
                window.removeEventFilter(self)
                _fit_to_screen(window)
            return False

    window._fit_once_framed = FitOnceFramed(window)  # kept alive with the window
    window.installEventFilter(window._fit_once_framed)


def _refuse_a_readers_login(store: Store) -> None:
    """A reader's or adjudicator's server login opens its worklist only (it may not list the studies)."""
    if getattr(store, "pg", None) is None:
        return  # a SQLite store has no logins (and the start need not import the reading-study module)
    from cno_annotate import reading_study as rs

    login = rs.limited_login(store)
    if login is not None:
        studies = " or ".join(rs.names(store)) or "NAME"
        raise CnoError(f"the login {login!r} reads a reading study's worklist: open it with --reader {login} "
                       f"--reading-study {studies} (and --pacs NODE, the study PACS of its images)")


#: The file that marks a reading package's folder (``cno_annotate.packages.MANIFEST``; a test checks they agree).
PACKAGE_MANIFEST = "manifest.json"


def _package_at(folder: Path):
    """The reading package at ``folder`` (the package itself or its ``store`` folder), or None."""
    if not any((candidate / PACKAGE_MANIFEST).is_file() for candidate in (folder, folder.parent)):
        return None  # not a package: its module (and the reading-study modules it loads) can wait for the window
    from cno_annotate import packages

    for candidate in (folder, folder.parent):
        if packages.is_package(candidate) and (candidate == folder or folder.name == packages.STORE):
            return packages.open_package(candidate)
    return None


def _study_to_open(store: Store, study: str | None, sample: bool) -> str | None:
    if sample:
        from cno_annotate.importer import import_paths  # only for the sample: opening a stored study imports nothing

        folder = bundled_sample_dir()
        report = import_paths(store, [folder])
        if not report.studies:
            raise CnoError(f"no study found in {folder}")
        return sorted(report.studies)[0]
    if study:
        return store.study_uid_for(study)
    return store.first_study_uid()  # (the study list's missing-file counts are the window's: 400 stats here)


def _has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main() -> int:
    """GUI entry point: the viewer on the default store."""
    from cno_annotate.cli import main as cli_main

    return cli_main(["view", *sys.argv[1:]])

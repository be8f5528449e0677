"""Load volumes in a worker thread, newest request wins.

Workers open their own store connection (SQLite connections stay in the
thread that made them) and report progress, the volume, or a one-line
error through Qt signals, which arrive in the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from cno_annotate.errors import CnoError
from cno_annotate.io.pixels import is_decoder_panic
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume


class _Signals(QObject):
    progress = Signal(str, int, float)  # view, request, fraction
    preview = Signal(str, int, object)  # view, request, Volume being composed
    loaded = Signal(str, int, object)  # view, request, Volume
    failed = Signal(str, int, str)  # view, request, message


class _LoadJob(QRunnable):
    def __init__(self, store_root: Path, volume_id: str, view: str, request: int, signals: _Signals):
        super().__init__()
        self.store_root, self.volume_id, self.view, self.request = store_root, volume_id, view, request
        self.signals = signals

    def run(self) -> None:
        last = [-1.0]

        def progress(done: int, total: int) -> None:
            fraction = done / max(total, 1)
            if fraction - last[0] >= 0.05 or done == total:
                last[0] = fraction
                self.signals.progress.emit(self.view, self.request, fraction)

        try:
            store = Store.open(self.store_root)
            try:
                volume = load_volume(store, self.volume_id, progress,
                                     preview=lambda v: self.signals.preview.emit(self.view, self.request, v))
            finally:
                store.close()
        except CnoError as exc:
            self.signals.failed.emit(self.view, self.request, str(exc))
        except Exception as exc:  # the window must survive any failure
            self.signals.failed.emit(self.view, self.request, f"{type(exc).__name__}: {exc}")
        except BaseException as exc:  # a Rust decoder's panic is not an Exception
            if not is_decoder_panic(exc):
                raise
            self.signals.failed.emit(self.view, self.request, f"the image decoder crashed: {exc}")
        else:
            self.signals.loaded.emit(self.view, self.request, volume)


class VolumeLoader(QObject):
    """Queue volume loads, one at a time, in the order asked (visible first)."""

    progress = Signal(str, float)
    #: A composed volume's first station, before composition ends (``load.preview``).
    preview = Signal(str, object)
    loaded = Signal(str, object)
    failed = Signal(str, str)

    def __init__(self, store_root: Path, parent=None):
        super().__init__(parent)
        self.store_root = Path(store_root)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._signals = _Signals()
        self._latest: dict[str, int] = {}
        self._counter = 0
        self._signals.progress.connect(self._relay_progress)
        self._signals.loaded.connect(self._relay_loaded)
        self._signals.preview.connect(self._relay_preview)
        self._signals.failed.connect(self._relay_failed)

    def load(self, view: str, volume_id: str) -> None:
        """Load a volume for a view; an older request for the same view is ignored."""
        self._counter += 1
        self._latest[view] = self._counter
        self.pool.start(_LoadJob(self.store_root, volume_id, view, self._counter, self._signals))

    def wait(self, msecs: int = -1) -> bool:
        """Wait for queued loads (tests and screenshots)."""
        return self.pool.waitForDone(msecs)

    def _current(self, view: str, request: int) -> bool:
        return self._latest.get(view) == request

    def _relay_progress(self, view: str, request: int, fraction: float) -> None:
        if self._current(view, request):
            self.progress.emit(view, fraction)

    def _relay_preview(self, view: str, request: int, volume) -> None:
        if self._current(view, request):
            self.preview.emit(view, volume)

    def _relay_loaded(self, view: str, request: int, volume) -> None:
        if self._current(view, request):
            self.loaded.emit(view, volume)

    def _relay_failed(self, view: str, request: int, message: str) -> None:
        if self._current(view, request):
            self.failed.emit(view, message)

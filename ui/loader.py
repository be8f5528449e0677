"""Load volumes in a worker thread, newest request wins.

Workers open their own store connection (SQLite connections stay in the
thread that made them) and report progress, the volume with its display
facts (presets, missing slices: scanned here, or read from beside a cached
composed volume, so the GUI thread only shows them), or a one-line error
through Qt signals, which arrive in the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from cno_annotate.display.prefetch import Prefetch


class _Signals(QObject):
    progress = Signal(str, int, float)  # view, request, fraction
    preview = Signal(str, int, object, object)  # view, request, Volume being composed, VolumeFacts
    loaded = Signal(str, int, object, object)  # view, request, Volume, VolumeFacts
    failed = Signal(str, int, str)  # view, request, message


class _LoadJob(QRunnable):
    """Load one volume in the pool's thread, or pass on what a prefetch started earlier reports."""

    def __init__(self, store_root: Path, volume_id: str, view: str, request: int, signals: _Signals,
                 prefetch: Prefetch | None = None, running: set[Prefetch] | None = None):
        super().__init__()
        self.store_root, self.volume_id, self.view, self.request = store_root, volume_id, view, request
        self.signals = signals
        self.prefetch = prefetch
        self.running = running if running is not None else set()  # the loader's loads under way

    def run(self) -> None:
        last = [-1.0]
        view, request, signals = self.view, self.request, self.signals

        def sink(kind: str, *payload) -> None:
            if kind == "progress":
                done, total = payload
                fraction = done / max(total, 1)
                if fraction - last[0] >= 0.05 or done == total:
                    last[0] = fraction
                    signals.progress.emit(view, request, fraction)
            else:
                getattr(signals, kind).emit(view, request, *payload)

        prefetch = self.prefetch or Prefetch.start(self.store_root, self.volume_id)  # (in a thread: abandonable)
        self.running.add(prefetch)
        try:
            prefetch.attach(sink)
            prefetch.join()  # the loader is done when the prefetch is (tests and screenshots wait for it)
        finally:
            self.running.discard(prefetch)


class VolumeLoader(QObject):
    """Queue volume loads, one at a time, in the order asked (visible first)."""

    progress = Signal(str, float)
    #: A composed volume's first station, before composition ends (``load.preview``), and its facts.
    preview = Signal(str, object, object)
    #: The volume and its facts (:class:`cno_annotate.display.facts.VolumeFacts`).
    loaded = Signal(str, object, object)
    failed = Signal(str, str)

    def __init__(self, store_root: Path, parent=None):
        super().__init__(parent)
        self.store_root = Path(store_root)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._signals = _Signals()
        self._latest: dict[str, int] = {}
        self._counter = 0
        self._prefetched: dict[str, Prefetch] = {}  # adopted, not yet asked for, by volume id
        self._running: set[Prefetch] = set()  # the loads under way (in the pool's thread)
        self._signals.progress.connect(self._relay_progress)
        self._signals.loaded.connect(self._relay_loaded)
        self._signals.preview.connect(self._relay_preview)
        self._signals.failed.connect(self._relay_failed)

    def adopt(self, *prefetches: Prefetch) -> None:
        """Take over prefetches of this store for the first requests of their volumes (:meth:`take_loaded` or
        :meth:`load`).

        A request for a volume that none of them loads drops them all (their loading ends on its own).
        """
        self._prefetched = {prefetch.volume_id: prefetch for prefetch in prefetches}

    def take_loaded(self, view: str, volume_id: str):
        """(volume, facts) of the adopted prefetch of ``volume_id`` if it has finished, for ``view``; or None.

        The view's older requests are then ignored, as after :meth:`load`.
        """
        prefetch = self._take(volume_id)
        done = prefetch.loaded() if prefetch is not None else None
        if done is not None:
            self._counter += 1
            self._latest[view] = self._counter
        elif prefetch is not None:
            self._prefetched[volume_id] = prefetch  # still loading: the load that follows takes it over
        return done

    def load(self, view: str, volume_id: str) -> None:
        """Load a volume for a view; an older request for the same view is ignored."""
        self._counter += 1
        self._latest[view] = self._counter
        prefetch = self._take(volume_id)
        self.pool.start(_LoadJob(self.store_root, volume_id, view, self._counter, self._signals, prefetch,
                                 self._running))

    def _take(self, volume_id: str) -> Prefetch | None:
        """The adopted prefetch of ``volume_id``, no longer adopted; none of them if none is of it."""
        prefetch = self._prefetched.pop(volume_id, None)
        if prefetch is None:
            self._prefetched = {}
        return prefetch

    def abandon(self) -> None:
        """Stop waiting for the loads a child process composes (the window is closing): it ends with the viewer,
        removing the cache file it was writing. A load in a thread is waited for (:meth:`wait`): stopped by
        the interpreter's exit it would leave a half-written cache file.
        """
        for prefetch in [*self._prefetched.values(), *list(self._running)]:
            if prefetch.in_child:
                prefetch.abandon()
        self._prefetched = {}

    def wait(self, msecs: int = -1) -> bool:
        """Wait for queued loads (tests and screenshots)."""
        return self.pool.waitForDone(msecs)

    def _current(self, view: str, request: int) -> bool:
        return self._latest.get(view) == request

    def _relay_progress(self, view: str, request: int, fraction: float) -> None:
        if self._current(view, request):
            self.progress.emit(view, fraction)

    def _relay_preview(self, view: str, request: int, volume, facts) -> None:
        if self._current(view, request):
            self.preview.emit(view, volume, facts)

    def _relay_loaded(self, view: str, request: int, volume, facts) -> None:
        if self._current(view, request):
            self.loaded.emit(view, volume, facts)

    def _relay_failed(self, view: str, request: int, message: str) -> None:
        if self._current(view, request):
            self.failed.emit(view, message)

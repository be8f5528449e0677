"""Online readers' images: fetch a case from the study PACS into the local cache, in a worker thread.

The core :func:`cno_annotate.study_pacs.fetch_case` does the work (where the
case is on the PACS, the retrieve, the cache); this wraps it in a
``QRunnable`` that opens its own store session and PACS client and reports
through signals, which arrive in the GUI thread. The newest request wins.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from cno_annotate import study_pacs
from cno_annotate.errors import CnoError
from cno_annotate.pacs import config
from cno_annotate.store import Store


class _Signals(QObject):
    progress = Signal(int, str, int, int)  # request, reading code, received, expected
    fetched = Signal(int, str, str)  # request, reading code, study UID in the cache
    failed = Signal(int, str, str)  # request, reading code, message


class _FetchJob(QRunnable):
    def __init__(self, store_root: str, reading_study: str, code: str, node: str, request: int, signals: _Signals):
        super().__init__()
        self.store_root, self.reading_study, self.code, self.node = store_root, reading_study, code, node
        self.request, self.signals = request, signals

    def _progress(self, done: int, total: int) -> None:
        self.signals.progress.emit(self.request, self.code, done, total)

    def run(self) -> None:
        try:
            store = Store.open(self.store_root)
            try:
                from cno_annotate.pacs.client import open_client  # (pydicom): not loaded until a case is fetched

                with open_client(config.get_node(self.node)) as client:
                    cached = study_pacs.fetch_case(store, self.reading_study, self.code, client,
                                                   self._progress)
            finally:
                store.close()
        except CnoError as exc:
            self.signals.failed.emit(self.request, self.code, str(exc))
        except Exception as exc:  # the window must survive any failure
            self.signals.failed.emit(self.request, self.code, f"{type(exc).__name__}: {exc}")
        else:
            self.signals.fetched.emit(self.request, self.code, cached.study_uid)


class CaseFetcher(QObject):
    """Fetch cases of a reading study from a study PACS node; :attr:`fetched` (code, cached study UID) when done.

    :attr:`progress` says which case (the one being read, or its prior) and how many of its instances are in.
    """

    progress = Signal(str, int, int)  # reading code, instances received, instances expected
    fetched = Signal(str, str)
    failed = Signal(str, str)

    def __init__(self, store_root: str, reading_study: str, node: str, parent=None):
        super().__init__(parent)
        self.store_root, self.reading_study, self.node = store_root, reading_study, node
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._signals = _Signals()
        self._latest = 0
        self._signals.progress.connect(self._relay_progress)
        self._signals.fetched.connect(self._relay_fetched)
        self._signals.failed.connect(self._relay_failed)

    def fetch(self, code: str) -> None:
        """Fetch a case (in the background); an older request's result is dropped."""
        self._latest += 1
        self.pool.start(_FetchJob(self.store_root, self.reading_study, code, self.node, self._latest, self._signals))

    def wait(self, msecs: int = -1) -> bool:
        """Wait for the fetches in flight (closing, tests)."""
        return self.pool.waitForDone(msecs)

    def _relay_progress(self, request: int, code: str, done: int, total: int) -> None:
        if request == self._latest:
            self.progress.emit(code, done, total)

    def _relay_fetched(self, request: int, code: str, study_uid: str) -> None:
        if request == self._latest:
            self.fetched.emit(code, study_uid)

    def _relay_failed(self, request: int, code: str, message: str) -> None:
        if request == self._latest:
            self.failed.emit(code, message)

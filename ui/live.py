"""Live reading progress in the viewer: the store's server notifies, a socket notifier wakes the window.

The core :class:`~cno_annotate.store.live.ProgressListener` holds the listening
session; a ``QSocketNotifier`` on its socket calls :meth:`LiveProgress.deliver`
in the GUI thread when the server sent something, so nothing polls. An SQLite
store has no server: :func:`live_progress_for` returns None and the window
shows what it read when it last refreshed.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QSocketNotifier, QTimer, Signal

from cno_annotate.errors import CnoError
from cno_annotate.store import Store
from cno_annotate.store.live import ProgressListener, listener_for


class LiveProgress(QObject):
    """Emits :attr:`events` (a list of core events) whenever the server announced reading progress.

    A lost listening session (server restart, a terminated backend) is opened again at
    once; then :attr:`reconnected` tells the window to re-read what it shows, because
    notifications sent meanwhile were missed. If the server cannot be reached,
    :attr:`lost` carries a one-line message, and the session is tried again every
    :attr:`RETRY_MS` until the server answers (a restart), then :attr:`reconnected`.
    """

    events = Signal(list)
    reconnected = Signal()
    lost = Signal(str)
    RETRY_MS = 5000

    def __init__(self, listener: ProgressListener, parent=None):
        super().__init__(parent)
        self.listener = listener
        self._notifier = self._watch(listener)
        self._retry = QTimer(self)
        self._retry.setInterval(self.RETRY_MS)
        self._retry.timeout.connect(self._listen_again)

    def _watch(self, listener: ProgressListener) -> QSocketNotifier:
        notifier = QSocketNotifier(listener.fileno(), QSocketNotifier.Type.Read, self)
        notifier.activated.connect(self.deliver)
        return notifier

    def deliver(self) -> None:
        """Turn what arrived into events and emit them (nothing arrived: nothing emitted)."""
        try:
            events = self.listener.pending()
        except Exception:  # the session was lost: listen again, the window keeps working either way
            self._listen_again()
            return
        if events:
            self.events.emit(events)

    def _listen_again(self) -> None:
        self._end_session()
        try:
            self.listener = ProgressListener(self.listener.url)
        except Exception as exc:  # unreachable, or LISTEN refused: one line in the window, no traceback
            if not self._retry.isActive():
                self.lost.emit(f"Live updates stopped ({' '.join(str(exc).split())}); the worklist shows what "
                               f"it read last; trying again every {self.RETRY_MS // 1000} s")
                self._retry.start()
            return
        self._retry.stop()
        self._notifier = self._watch(self.listener)
        self.reconnected.emit()

    def close(self) -> None:
        """Stop listening (and trying again) and end the session."""
        self._retry.stop()
        self._end_session()

    def _end_session(self) -> None:
        self._notifier.setEnabled(False)
        try:
            self.listener.close()
        except Exception:  # a session already lost has nothing left to close
            pass


def live_progress_for(store: Store, parent=None) -> LiveProgress | None:
    """Live progress for a store on a server; None for SQLite or when the server refuses to listen."""
    try:
        listener = listener_for(store)
    except CnoError:
        return None
    return LiveProgress(listener, parent) if listener is not None else None

"""The viewer ends cleanly when the system asks: SIGTERM, SIGINT (Ctrl+C) and a session's logout.

Python runs a signal's handler only between two of its own instructions, and Qt's event loop may
wait in C for a long time: the handler is woken through a socket (``signal.set_wakeup_fd``) that
Qt watches. On the signal the window is closed as by its close button (the reading time measured
since the last save and a comment being typed are saved, the store is closed), then the process
ends as the signal asks (the default action: the caller sees it terminated by that signal).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

from PySide6.QtCore import QObject, QSocketNotifier

#: The signals that end the viewer after its state is saved.
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Termination(QObject):
    """Calls ``save_and_close`` on SIGTERM or SIGINT, then ends the process by that signal.

    Installed from the main thread only (Python's rule for signal handlers); elsewhere, or
    when the platform has no wake-up socket, it does nothing. :meth:`restore` puts the
    previous handlers back (the window closed by the reader).
    """

    def __init__(self, save_and_close: Callable[[], None], parent: QObject | None = None):
        super().__init__(parent)
        self._save_and_close = save_and_close
        self._previous: dict[int, object] = {}
        self._previous_fd: int | None = None
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._notifier: QSocketNotifier | None = None
        try:
            reading, writing = socket.socketpair()
            reading.setblocking(False)
            writing.setblocking(False)
            self._previous_fd = signal.set_wakeup_fd(writing.fileno())
        except (ValueError, OSError):  # not the main thread, or no socket pair
            return
        self._sockets = (reading, writing)
        # a signal the process was started to ignore (nohup, a background job of a script) stays ignored
        self._previous = {number: signal.signal(number, _noted) for number in ENDING_SIGNALS
                          if signal.getsignal(number) is not signal.SIG_IGN}
        self._notifier = QSocketNotifier(reading.fileno(), QSocketNotifier.Read, self)
        self._notifier.activated.connect(self._woken)

    def _woken(self, *_args) -> None:
        """A signal arrived: save, close, and end by the first ending signal among those received."""
        if self._sockets is None:
            return
        try:
            received = self._sockets[0].recv(512)
        except OSError:
            return
        ending = [number for number in received if number in ENDING_SIGNALS]
        if not ending:
            return
        self._save_and_close()
        self.restore()
        signal.signal(ending[0], signal.SIG_DFL)
        os.kill(os.getpid(), ending[0])

    def restore(self) -> None:
        """Put back the handlers and wake-up socket that were there before (once).

        Only what is still this object's: a second window may have installed its own since.
        """
        if self._sockets is None:
            return
        if self._notifier is not None:
            self._notifier.setEnabled(False)
        for number, handler in self._previous.items():
            if signal.getsignal(number) is _noted:
                signal.signal(number, handler)  # type: ignore[arg-type]
        current = signal.set_wakeup_fd(-1)
        if current != self._sockets[1].fileno():
            signal.set_wakeup_fd(current)  # another's: kept
        elif self._previous_fd is not None and self._previous_fd >= 0:
            try:
                signal.set_wakeup_fd(self._previous_fd)
            except (ValueError, OSError):  # that socket is closed meanwhile
                pass
        for end in self._sockets:
            end.close()
        self._sockets = None


def _noted(_number: int, _frame) -> None:
    """The Python-level handler: nothing; the wake-up socket already carries the signal to Qt.

    A function, not a method of the (Qt) object: a window deleted without being closed leaves it
    installed, and Python's ``signal.getsignal`` then compares it with its enumeration of handlers,
    which a method of a deleted Qt object refuses (RuntimeError at the next window's start).
    """

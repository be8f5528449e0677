"""Closing the viewer while a volume is still loading (a cold start composing a whole-body STIR).

The window waits for its loads before it closes the store (up to 5 s); found in a new-user
trial under Xvfb + openbox: closed while a 6-station study was composing, the window stayed
on screen, frozen, until composition ended. It must be gone as soon as the user closes it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")


def test_the_window_is_off_the_screen_while_it_waits_for_its_loads(open_viewer, qtbot):
    window = open_viewer()
    shown_while_waiting: list[bool] = []
    waiters = (window.loader, window.comparison)
    for waiter in waiters:
        wait = waiter.wait

        def recording_wait(msecs: int = -1, wait=wait) -> bool:
            shown_while_waiting.append(window.isVisible())
            return wait(msecs)

        waiter.wait = recording_wait
    window.close()
    assert shown_while_waiting == [False, False]  # hidden first, then the loads are waited for
    assert not window.isVisible()


def test_closing_does_not_wait_for_a_composition_still_running(open_viewer, qtbot):
    """The process need not wait for a composition when the window closes (it lingered 2.7-3.4 s after the
    window was gone: the loader's thread waited for the prefetch). A load that never ends stands in for it."""
    from cno_annotate.display.prefetch import Prefetch

    window = open_viewer()
    window.loader.wait(60000)
    endless = Prefetch(window.store_root, "a-volume-being-composed")
    endless._by_child = True  # as if a child process composed it: it reports nothing, ever
    window.loader.adopt(endless)
    window.loader.load("left", "a-volume-being-composed")
    qtbot.waitUntil(lambda: endless in window.loader._running)
    window.close()
    assert window.loader.wait(0)  # the pool's thread is free: nothing keeps the process from ending

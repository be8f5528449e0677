"""Active reading time: the time a reader spends working on a case, idle spells and other windows left out.

The viewer reports every input (key, click, wheel, drag) with :meth:`ActiveTimer.activity`
and the window's focus with :meth:`ActiveTimer.focus_changed`; the timer never looks at a
clock itself but asks the one it is given, so a test drives it with a fake clock.

The rule: time between two inputs counts in full while the window has the focus, but at
most ``idle_limit`` seconds; so a reader who stops for longer than the limit adds the limit
and then the timer stands still (paused) until the next input. Losing the focus pauses at
once (the time since the last input counts, capped the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Idle time (seconds) after which the timer pauses, unless a reading study sets its own.
DEFAULT_IDLE_SECONDS = 60.0


class ActiveTimer:
    """Active time of one case, accrued in memory until :meth:`take` hands it over to be stored.

    Parameters
    ----------
    idle_limit : float
        Seconds without input after which the timer pauses (more than 0).
    clock : callable
        Seconds as a float, monotonic (default :func:`time.monotonic`).
    """

    def __init__(self, idle_limit: float = DEFAULT_IDLE_SECONDS, clock: Callable[[], float] = time.monotonic):
        if not idle_limit > 0:
            raise ValueError(f"the idle limit must be more than 0 seconds, not {idle_limit!r}")
        self.idle_limit = float(idle_limit)
        self._clock = clock
        self._focused = True
        self._last: float | None = None  # time of the last input while running; None: paused
        self._counted_to = 0.0  # time up to which the running interval is already in _pending
        self._pending = 0.0  # accrued, not yet taken
        self.taken = 0.0  # handed over by take() so far

    @property
    def running(self) -> bool:
        """Whether time is counting now (focused, and the last input is within the idle limit)."""
        if self._last is None or not self._focused:
            return False
        return self._clock() - self._last <= self.idle_limit

    def activity(self) -> None:
        """An input by the reader: counts the time since the previous one (capped), or restarts a paused timer."""
        if not self._focused:
            return
        now = self._accrue()
        self._last = self._counted_to = now

    def focus_changed(self, focused: bool) -> None:
        """The window gained (the timer restarts) or lost (it pauses) the focus."""
        if focused and not self._focused:
            self._focused = True
            self._last = self._counted_to = self._clock()
        elif not focused and self._focused:
            self._accrue()
            self._focused, self._last = False, None

    def pause(self) -> None:
        """Stop counting until the next input (a case closed, a dialog of another program)."""
        self._accrue()
        self._last = None

    def elapsed(self) -> float:
        """Seconds counted so far (taken or not), including the running interval."""
        return self.taken + self._pending + self._running_part(self._clock())

    def take(self) -> float:
        """The seconds counted since the last take (to be added to the stored time); counting goes on."""
        self._accrue()
        out, self._pending = self._pending, 0.0
        self.taken += out
        return out

    def give_back(self, seconds: float) -> None:
        """Return seconds that :meth:`take` handed over but could not be stored (they are taken again next time)."""
        self.taken -= seconds
        self._pending += seconds

    def _running_part(self, now: float) -> float:
        """Seconds not yet counted up to ``now``, never past the last input plus the idle limit."""
        if self._last is None or not self._focused:
            return 0.0
        return max(0.0, min(now, self._last + self.idle_limit) - self._counted_to)

    def _accrue(self) -> float:
        """Move the running interval into the pending total; pause if the idle limit has passed; the time now.

        The interval runs from what was counted last (the last input, or an earlier take) to
        now, but never past the last input plus the idle limit: taking the time (an autosave)
        is not an input and does not restart the idle limit.
        """
        now = self._clock()
        if self._last is None or not self._focused:
            return now
        self._pending += self._running_part(now)
        self._counted_to = max(self._counted_to, min(now, self._last + self.idle_limit))
        if now - self._last > self.idle_limit:
            self._last = None
        return now

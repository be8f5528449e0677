"""Slices without any signal: files that could not be read, and gaps in a series.

Slices that could not be read, and slices missing from a series, are zeros
in a loaded volume (and stay so in the composed volume and its cache). A
magnitude MR image is never exactly zero along a whole line of a slice that
was acquired, so a line of the acquisition (array axis 0 is the slice axis of
stacks and composed volumes, axis 2 runs along a row) with no signal at all,
at a height where other slices have signal, is a missing line. Runs of such
lines in one slice make one missing slice (of one station, for a composed
volume). The views draw them hatched and say how many there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class MissingSlices:
    """Where a volume has no signal: ``lines[k, j]`` is True when row ``j`` of slice ``k`` is missing."""

    lines: np.ndarray

    @cached_property
    def count(self) -> int:
        """Missing slices: runs of missing rows within one slice."""
        padded = np.pad(self.lines, ((0, 0), (1, 0)))
        return int(np.count_nonzero(padded[:, 1:] & ~padded[:, :-1]))

    def mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """A read-only boolean array of the volume's shape (a broadcast view, no copy)."""
        return np.broadcast_to(self.lines[:, :, None], shape)

    def badge(self) -> str:
        """What a view says about them, or "" when none is missing."""
        n = self.count
        if n == 0:
            return ""
        return f"{n} slice{'s' if n != 1 else ''} missing (hatched)"


def find_missing_slices(array: np.ndarray) -> MissingSlices:
    """Missing lines of a volume ``[k, j, i]`` (see the module's notes)."""
    empty = np.array([~np.any(np.asarray(array[k]) != 0, axis=1) for k in range(array.shape[0])], dtype=bool)
    empty = empty.reshape(array.shape[0], array.shape[1])  # (k, j): no signal along the row
    acquired = ~np.all(empty, axis=0)  # heights where some slice has signal
    return MissingSlices(lines=empty & acquired[None, :])

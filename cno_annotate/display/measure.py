"""Measurements on displayed slices: a ruler in millimetres.

A ruler is kept in patient coordinates (LPS mm) with the view, plane and slice
it was drawn on, so it follows zoom and pan and shows only on its own slice.
Its length is the distance between its ends in patient space, whatever the
pixel spacing along rows and columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ruler:
    """A straight measurement between two LPS points on one slice of one view."""

    view: str
    plane: str
    slice_index: int
    start: tuple[float, float, float]
    end: tuple[float, float, float]

    @property
    def length_mm(self) -> float:
        """Distance between the ends, in mm."""
        return float(np.linalg.norm(np.subtract(self.end, self.start)))

    @property
    def label(self) -> str:
        """What the view writes beside the ruler."""
        return f"{self.length_mm:.1f} mm"

"""Where the texts that name things over an image go: clear of each other and of what they do not name.

A view names lesion markers, regions of interest and rulers with labels beside
them. :func:`place_labels` puts each label next to the outline it names (its
*owner*), on the first side that leaves it clear of every label placed
before it, of every other owner (another lesion's marker, another ROI) and
of the view's fixed texts, moving further out ring by ring when the near
places are taken. Screen pixels, y down; no Qt here, so it is tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in screen pixels (y down)."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        """The right edge."""
        return self.left + self.width

    @property
    def bottom(self) -> float:
        """The bottom edge."""
        return self.top + self.height

    @classmethod
    def around(cls, points: Sequence[tuple[float, float]]) -> Box:
        """The smallest box holding every (x, y) point."""
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return cls(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))

    def overlap(self, other: Box, margin: float = 0.0) -> float:
        """The area this box shares with ``other`` grown by ``margin`` on every side (0: apart or touching)."""
        width = min(self.right, other.right + margin) - max(self.left, other.left - margin)
        height = min(self.bottom, other.bottom + margin) - max(self.top, other.top - margin)
        return width * height if width > 0 and height > 0 else 0.0

    def inside(self, bounds: Box) -> Box:
        """This box moved (not resized) to lie within ``bounds`` as far as it fits (top left wins)."""
        left = max(bounds.left, min(self.left, bounds.right - self.width))
        top = max(bounds.top, min(self.top, bounds.bottom - self.height))
        return Box(left, top, self.width, self.height)


class Side(StrEnum):
    """Where a label goes relative to the outline it names."""

    RIGHT = "right"
    BELOW = "below"
    ABOVE = "above"
    LEFT = "left"


#: A marker's name goes beside it; an ROI's block of statistics below it.
MARKER_SIDES = (Side.RIGHT, Side.LEFT, Side.ABOVE, Side.BELOW)
BLOCK_SIDES = (Side.BELOW, Side.ABOVE, Side.RIGHT, Side.LEFT)


@dataclass(frozen=True)
class LabelRequest:
    """A label of ``width`` x ``height`` pixels that names the outline in ``owner``."""

    owner: Box
    width: float
    height: float
    sides: tuple[Side, ...] = BLOCK_SIDES

    def __post_init__(self) -> None:
        if not self.sides or self.width < 0 or self.height < 0:
            raise ValueError("a label needs a size of at least 0 x 0 and one side to go on")


def _candidates(request: LabelRequest, ring: int, gap: float, step: float) -> list[Box]:
    """The label's places ``ring`` steps out from its owner, on each side in the request's order."""
    owner, w, h = request.owner, request.width, request.height
    out = ring * step
    middle = owner.top + owner.height / 2 - h + 3  # beside: its baseline just above the owner's centre line,
    # clear of a crosshair through a marker's centre
    places = []
    for side in request.sides:
        if side is Side.RIGHT:
            places += [Box(owner.right + gap, middle - out, w, h), Box(owner.right + gap, middle + out, w, h)]
        elif side is Side.LEFT:
            places += [Box(owner.left - gap - w, middle - out, w, h), Box(owner.left - gap - w, middle + out, w, h)]
        elif side is Side.BELOW:
            places.append(Box(owner.left, owner.bottom + gap + out, w, h))
        else:
            places.append(Box(owner.left, owner.top - gap - h - out, w, h))
    return places if ring else list(dict.fromkeys(places))


def place_labels(requests: Sequence[LabelRequest], bounds: Box, obstacles: Sequence[Box] = (),
                 gap: float = 4.0, rings: int = 16) -> list[Box]:
    """Place every label; no two overlap, none covers another owner or an obstacle, when room allows.

    Parameters
    ----------
    requests
        The labels in order of priority (earlier ones keep the nearer places).
    bounds
        The view: every label lies inside it (when it fits).
    obstacles
        Texts that do not move (the view's corner texts, orientation letters, scale bar).
    gap
        Pixels between a label and its owner, and kept free between labels.
    rings
        How many steps (half a label's height, at least 6 pixels) a label may move out from its owner.

    Returns
    -------
    list of Box
        One box per request, in order. When no place is clear, the place that overlaps least.
    """
    owners = [r.owner for r in requests]
    placed: list[Box] = []
    for request in requests:
        blockers = [*placed, *obstacles, *owners]
        margins = [gap / 2] * len(placed) + [0.0] * (len(obstacles) + len(owners))
        step = max(6.0, request.height / 2)
        best: tuple[float, Box] | None = None
        for ring in range(rings):
            for box in _candidates(request, ring, gap, step):
                box = box.inside(bounds)
                cost = sum(box.overlap(b, m) for b, m in zip(blockers, margins))
                if best is None or cost < best[0]:
                    best = (cost, box)
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        placed.append(best[1] if best is not None else Box(request.owner.right + gap, request.owner.top,
                                                           request.width, request.height).inside(bounds))
    return placed

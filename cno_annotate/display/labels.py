"""Where the texts that name things over an image go: clear of each other and of what they do not name.

A view names lesion markers, regions of interest and rulers with labels beside
them. :func:`place_labels` puts each label next to the outline it names (its
*owner*), on the first side that leaves it clear of every label placed
before it, of every other owner (another lesion's marker, another ROI) and
of the view's fixed texts, moving further out ring by ring when the near
places are taken. Screen pixels, y down; no Qt here, so it is tested alone.
"""

from __future__ import annotations

import math
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


#: Pixels between a label beside its owner and the owner's centre line (where a crosshair may run).
CROSSHAIR_CLEARANCE = 2.0


@dataclass(frozen=True)
class EdgeAnchor:
    """Where a view names an owner that lies outside it: a point on the ``edge`` on the way to the owner.

    ``box`` is that point (0 x 0), ``sides`` the side facing into the view (the label goes there) and
    ``arrow`` points from the label towards the owner.
    """

    box: Box
    edge: str
    sides: tuple[Side, ...]
    arrow: str


#: Per edge of the view: the side of its anchor facing into the view, and the arrow pointing out.
_EDGES = {"top": (Side.BELOW, "↑"), "bottom": (Side.ABOVE, "↓"), "left": (Side.RIGHT, "←"),
          "right": (Side.LEFT, "→")}


def edge_anchor(owner: Box, bounds: Box) -> EdgeAnchor | None:
    """The point of the view's edge nearest on the way to an owner lying wholly outside the view, or None.

    The straight line from the view's centre to the owner's centre leaves the view through one edge;
    the anchor is where. An owner of which any part shows is named beside it (None).
    """
    if owner.overlap(bounds) or (owner.width == 0 and owner.height == 0 and _inside(_centre(owner), bounds)):
        return None
    (cx, cy), (tx, ty) = _centre(bounds), _centre(owner)
    dx, dy = tx - cx, ty - cy
    along_x = bounds.width / 2 / abs(dx) if dx else math.inf
    along_y = bounds.height / 2 / abs(dy) if dy else math.inf
    if along_x < along_y:
        edge, x, y = ("right" if dx > 0 else "left"), (bounds.right if dx > 0 else bounds.left), cy + dy * along_x
    else:
        edge, x, y = ("bottom" if dy > 0 else "top"), cx + dx * along_y, (bounds.bottom if dy > 0 else bounds.top)
    side, arrow = _EDGES[edge]
    return EdgeAnchor(Box(x, y, 0.0, 0.0), edge, (side,), arrow)


def _inside(point: tuple[float, float], bounds: Box) -> bool:
    return bounds.left <= point[0] <= bounds.right and bounds.top <= point[1] <= bounds.bottom


#: A label further than this (pixels, along x plus along y) from what it names gets a leader line to it.
LEADER_FROM = 12.0


def _nearest(box: Box, point: tuple[float, float]) -> tuple[float, float]:
    """The point of ``box`` nearest to ``point``."""
    return min(max(point[0], box.left), box.right), min(max(point[1], box.top), box.bottom)


def _centre(box: Box) -> tuple[float, float]:
    return box.left + box.width / 2, box.top + box.height / 2


def leader_line(owner: Box, label: Box) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The line a view draws from what a label names to the label, or None when the label sits beside it.

    It runs from the point of ``owner`` nearest the label's centre to the point of
    the label nearest the owner's centre.
    """
    start, end = _nearest(owner, _centre(label)), _nearest(label, _centre(owner))
    if abs(end[0] - start[0]) + abs(end[1] - start[1]) <= LEADER_FROM:
        return None
    return start, end


def crossing(line: tuple[tuple[float, float], tuple[float, float]], box: Box, margin: float = 0.0) -> float:
    """How long a stretch of the segment ``line`` runs inside ``box`` grown by ``margin`` (0: it passes clear).

    Liang-Barsky clipping of the segment to the box.
    """
    (x0, y0), (x1, y1) = line
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0 - (box.left - margin)), (dx, box.right + margin - x0),
                 (-dy, y0 - (box.top - margin)), (dy, box.bottom + margin - y0)):
        if p == 0:
            if q <= 0:
                return 0.0  # parallel to this edge and outside (or on) it
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low >= high:
            return 0.0
    return (high - low) * (dx * dx + dy * dy) ** 0.5


def _candidates(request: LabelRequest, ring: int, gap: float, step: float) -> list[Box]:
    """The label's places ``ring`` steps out from its owner, on each side in the request's order."""
    owner, w, h = request.owner, request.width, request.height
    out = ring * step
    middle = owner.top + owner.height / 2 - h - CROSSHAIR_CLEARANCE  # beside: the whole text (descenders too)
    # just above the owner's centre line, clear of a crosshair through a marker's centre
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
    for side in request.sides if ring else ():  # then further out on each side, straight and slanting
        for along in (0.0, -out, out):
            if side is Side.RIGHT:
                places.append(Box(owner.right + gap + out, middle + along, w, h))
            elif side is Side.LEFT:
                places.append(Box(owner.left - gap - w - out, middle + along, w, h))
            elif side is Side.BELOW:
                places.append(Box(owner.left + along, owner.bottom + gap + out, w, h))
            else:
                places.append(Box(owner.left + along, owner.top - gap - h - out, w, h))
    return places if ring else list(dict.fromkeys(places))


def place_labels(requests: Sequence[LabelRequest], bounds: Box, obstacles: Sequence[Box] = (),
                 gap: float = 4.0, rings: int = 16) -> list[Box]:
    """Place every label; no two overlap, none covers another owner or an obstacle, and no leader line passes
    under a label or an obstacle, when room allows.

    Labels are placed one after the other, each on its nearest clear place. When
    some found none (the places around their owners were taken by labels placed
    before them, or every way out for their leader line was), those choose first
    in another round, up to :data:`ROUNDS` rounds; the round that covers least wins.

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
        One box per request, in order. When no place is clear, the place that overlaps least (a pixel
        of leader line under a text counts as :data:`LEADER_COST` square pixels of overlap).
    """
    order = list(range(len(requests)))
    best: tuple[float, list[Box]] | None = None
    for _ in range(ROUNDS):
        boxes, costs = _place_in_order(requests, order, bounds, obstacles, gap, rings)
        if best is None or sum(costs) < best[0]:
            best = (sum(costs), boxes)
        if best[0] == 0:
            break
        order = [n for n in order if costs[n] > 0] + [n for n in order if costs[n] == 0]
    return best[1] if best is not None else []


#: Rounds of :func:`place_labels` at most (the labels left without a clear place choose first in the next).
ROUNDS = 4


def _place_in_order(requests: Sequence[LabelRequest], order: Sequence[int], bounds: Box, obstacles: Sequence[Box],
                    gap: float, rings: int) -> tuple[list[Box], list[float]]:
    """Each label on its nearest clear (else least covering) place, in ``order``; the boxes and what each covers."""
    owners = [r.owner for r in requests]
    placed: list[Box] = []
    leaders: list[tuple[tuple[float, float], tuple[float, float]]] = []  # of the labels placed so far
    boxes: list[Box] = [bounds] * len(requests)
    costs = [0.0] * len(requests)
    for n in order:
        request = requests[n]
        blockers = [(b.left - m, b.top - m, b.right + m, b.bottom + m)
                    for b, m in [*((p, gap / 2) for p in placed), *((o, 0.0) for o in (*obstacles, *owners))]]
        texts = [*placed, *obstacles]  # what no leader line may pass under
        step = max(6.0, request.height / 2)
        best: tuple[float, Box] | None = None
        for ring in range(rings):
            for box in _candidates(request, ring, gap, step):
                box = box.inside(bounds)
                cost = _covered(box, blockers, best[0] if best is not None else math.inf)
                if best is not None and cost >= best[0]:
                    continue  # no better than a place already found, whatever its leader crosses
                cost += LEADER_COST * _leader_crossings(request.owner, box, texts, leaders)
                if best is None or cost < best[0]:
                    best = (cost, box)
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        costs[n], boxes[n] = best if best is not None else (0.0, Box(request.owner.right + gap, request.owner.top,
                                                                      request.width, request.height).inside(bounds))
        placed.append(boxes[n])
        line = leader_line(request.owner, boxes[n])
        if line is not None:
            leaders.append(line)
    return boxes, costs


def _covered(box: Box, blockers: Sequence[tuple[float, float, float, float]], enough: float) -> float:
    """The area of ``box`` under the (left, top, right, bottom) ``blockers``, counted until it reaches ``enough``.

    :meth:`Box.overlap` written out over plain numbers: this runs for every place of every label.
    """
    left, top, right, bottom = box.left, box.top, box.right, box.bottom
    total = 0.0
    for b_left, b_top, b_right, b_bottom in blockers:
        width = min(right, b_right) - max(left, b_left)
        if width > 0:
            height = min(bottom, b_bottom) - max(top, b_top)
            if height > 0:
                total += width * height
                if total >= enough:
                    return total
    return total


#: What a pixel of leader line under a text costs, against a square pixel of one text covering another.
LEADER_COST = 10.0


def _leader_crossings(owner: Box, box: Box, texts: Sequence[Box],
                      leaders: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> float:
    """Pixels of leader line under a text: this label's leader under ``texts``, and earlier leaders under it."""
    line = leader_line(owner, box)
    under = sum(crossing(line, text) for text in texts) if line is not None else 0.0
    return under + sum(crossing(other, box) for other in leaders)

"""From a marking gesture on a displayed slice to a lesion's centre and extent.

The views report where a gesture started and ended (image row and column of
the displayed slice); the geometry is decided here, so it is tested without a
window: a click places a point; a drag draws an ellipse from its centre; a
Shift+drag draws a box from corner to corner. The extent's depth across the
slices is the narrower in-plane half-size, on both sides of the slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cno_annotate.annotation.taxonomy import Taxonomy
from cno_annotate.display.checklist import propose_site, shows_whole_body
from cno_annotate.display.session import ViewState
from cno_annotate.io.axes import plane_normal
from cno_annotate.io.volume import Volume

#: A drag shorter than this (mm, larger in-plane half-size) is a click.
MIN_DRAG_MM = 1.0


def clip_to_image(view: ViewState, row: float, col: float) -> tuple[float, float]:
    """(row, column) clipped to the displayed slice."""
    m = view.loaded()[1]
    return float(np.clip(row, 0, m.rows - 1)), float(np.clip(col, 0, m.cols - 1))


def polygon_extent(view: ViewState, points_lps) -> dict:
    """A polygon extent drawn on a view's slice: its vertices (LPS mm) and a slab along the normal.

    The slab is as deep as the polygon's narrower in-plane half-size (at
    least half a slice) on both sides of the slice, as for a dragged ellipse.

    Raises
    ------
    ValueError
        With fewer than three vertices.
    """
    points = np.asarray(points_lps, dtype=float)
    if len(points) < 3:
        raise ValueError("a polygon extent needs at least three points")
    m = view.loaded()[1]
    normal = plane_normal(view.plane)
    in_plane = [a for a in range(3) if a != normal]
    depth = max(min(float(np.ptp(points[:, a])) for a in in_plane) / 2, m.slice_mm / 2)
    centre = float(points[0, normal])
    return {"kind": "polygon", "plane": view.plane, "points_mm": [[round(float(v), 2) for v in p] for p in points],
            "slice_range_mm": [round(centre - depth, 2), round(centre + depth, 2)]}


def gesture_lesion(view: ViewState, start: tuple[float, float], end: tuple[float, float],
                   box: bool = False, click: bool = False) -> tuple[np.ndarray, dict | None]:
    """The LPS centre and the extent (None for a point) of a marking gesture.

    Parameters
    ----------
    view : ViewState
        The view the gesture was made in (a ready one).
    start, end : tuple of float
        Image (row, column) where the gesture started and ended.
    box : bool
        Draw a box from corner to corner instead of an ellipse from the centre.
    click : bool
        The pointer hardly moved: a point lesion whatever the positions say.
    """
    m = view.loaded()[1]
    row0, col0 = clip_to_image(view, *start)
    row1, col1 = clip_to_image(view, *end)
    a, b = abs(col1 - col0) * m.col_mm, abs(row1 - row0) * m.row_mm
    normal = plane_normal(view.plane)
    if click or max(a, b) < MIN_DRAG_MM:
        return view.screen_to_lps(row0, col0), None
    if box:
        corners = np.array([view.screen_to_lps(row0, col0), view.screen_to_lps(row1, col1)])
        depth = max(min(a, b) / 2, m.slice_mm / 2)
        low, high = corners.min(axis=0), corners.max(axis=0)
        low[normal], high[normal] = corners[0][normal] - depth, corners[0][normal] + depth
        extent = {"kind": "box", "min_mm": [round(float(v), 2) for v in low],
                  "max_mm": [round(float(v), 2) for v in high]}
        return (low + high) / 2, extent
    centre = view.screen_to_lps(row0, col0)
    a, b = max(a, 1.0), max(b, 1.0)
    depth = min(a, b)
    extent = {"kind": "ellipse", "plane": view.plane, "radii_mm": [round(a, 2), round(b, 2)],
              "slice_range_mm": [round(float(centre[normal] - depth), 2), round(float(centre[normal] + depth), 2)]}
    return centre, extent


@dataclass(frozen=True)
class ClickPlacement:
    """Where a lesion placed by a click or drag lies: in the volume clicked, and in the body."""

    volume_id: str
    voxel: tuple[float, float, float]  # fractional (i, j, k) in that volume
    side: str | None  # of the body, from the LPS x of the point (None near the midline)
    site_id: str | None  # the site proposed for the reader to confirm (None: the volume is not a whole body)


def click_placement(volume: Volume, taxonomy: Taxonomy, centre) -> ClickPlacement:
    """The volume, voxel, side and proposed site of a lesion placed at ``centre`` (LPS mm) on ``volume``.

    A site is proposed only on a volume that shows the whole body (:func:`shows_whole_body`): the
    schematic is fitted to the vertex and the soles, which a station or a knee series does not hold.
    """
    point = np.asarray(centre, dtype=float)
    voxel = tuple(float(v) for v in volume.lps_to_index(point))
    site = propose_site(volume, taxonomy, point)[0] if shows_whole_body(volume) else None
    return ClickPlacement(volume.volume_id, voxel, taxonomy.propose_side(float(point[0])), site)  # type: ignore[arg-type]

"""Lesion markers on displayed slices.

A :class:`Marker` is what a view needs to draw a lesion: its centre in LPS
millimetres, its extent (semi-axes along x, y, z in mm), a label, a colour and
whether it is selected. :func:`markers_on_slice` cuts each marker's
ellipsoid with the displayed slice and returns screen ellipses, so a lesion
shows on every plane and every view it intersects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cno_annotate.annotation.model import DEFAULT_RADIUS_MM, Lesion, Read, extent_sizes
from cno_annotate.annotation.taxonomy import Taxonomy, load_taxonomy
from cno_annotate.display.planes import PlaneMapping, index_to_screen, screen_to_index
from cno_annotate.io.axes import PLANE_AXES
from cno_annotate.io.volume import apply_affine

if TYPE_CHECKING:
    from cno_annotate.followup import Ghost

#: Marker colours, chosen to stand out on a grey-scale image and from each other: the open read's
#: lesions, one without a site yet, the selected one; other readers' reads shown to an adjudicator
#: (each reader's read its colour, in turn); the prior study's lesions; prior lesions carried forward.
LESION_COLOUR = "#3ec8ff"
UNPLACED_COLOUR = "#ff5a5a"
SELECTED_COLOUR = "#ff3cf0"
READER_COLOURS = ("#7dff7a", "#ffb14d", "#b48cff", "#c8c8ff")
PRIOR_COLOUR = "#c08bff"
GHOST_COLOUR = "#ffb000"


@dataclass(frozen=True)
class Marker:
    """A lesion as the views draw it."""

    lps: tuple[float, float, float]
    radii_mm: tuple[float, float, float] = (5.0, 5.0, 5.0)
    label: str = ""
    colour: str = "#ffb000"
    selected: bool = False
    key: str = ""
    outline: dict | None = None  # a polygon extent (plane, LPS points, slice range): drawn as that polygon


@dataclass(frozen=True)
class ScreenMarker:
    """A marker's cut through one slice, in image pixels (row, column)."""

    marker: Marker
    row: float
    col: float
    row_radius: float
    col_radius: float
    in_plane: bool  # True: the slice passes through the marker's centre voxel
    outline: np.ndarray | None = None  # a polygon extent cut by this slice: its vertices, image (row, column)


def markers_on_slice(
    markers: list[Marker], mapping: PlaneMapping, affine: np.ndarray, slice_index: int
) -> list[ScreenMarker]:
    """The markers that the slice ``slice_index`` of this plane cuts.

    Each marker is an axis-aligned ellipsoid in LPS; its section at the
    slice's distance from the centre gives the drawn ellipse.
    """
    inverse = np.linalg.inv(affine)  # once per call, for every marker
    col_axis, row_axis, normal_axis = PLANE_AXES[mapping.plane]
    out = []
    for marker in markers:
        ijk = apply_affine(inverse, np.array(marker.lps, float))
        slice_pos, row, col = index_to_screen(mapping, ijk)
        distance_mm = abs(slice_pos - slice_index) * mapping.slice_mm
        normal_radius = max(marker.radii_mm[normal_axis], mapping.slice_mm / 2)
        if distance_mm > normal_radius:
            continue
        scale = float(np.sqrt(max(0.0, 1.0 - (distance_mm / normal_radius) ** 2)))
        out.append(
            ScreenMarker(
                marker=marker,
                row=row,
                col=col,
                row_radius=max(marker.radii_mm[row_axis] * scale / mapping.row_mm, 1.0),
                col_radius=max(marker.radii_mm[col_axis] * scale / mapping.col_mm, 1.0),
                in_plane=abs(slice_pos - slice_index) < 0.5,
                outline=_outline_on_slice(marker.outline, mapping, affine, inverse, slice_index),
            )
        )
    return out


def _outline_on_slice(extent: dict | None, mapping: PlaneMapping, affine: np.ndarray, inverse: np.ndarray,
                      slice_index: int) -> np.ndarray | None:
    """A polygon extent's vertices on this slice (image row, column), when the slice is of its plane and within it."""
    if not extent or extent.get("kind") != "polygon" or extent["plane"] != mapping.plane:
        return None
    normal = PLANE_AXES[mapping.plane][2]
    slice_lps = apply_affine(affine, screen_to_index(mapping, slice_index, 0.0, 0.0))
    low, high = extent["slice_range_mm"]
    if not min(low, high) - mapping.slice_mm / 2 <= slice_lps[normal] <= max(low, high) + mapping.slice_mm / 2:
        return None
    return np.array([index_to_screen(mapping, apply_affine(inverse, np.array(p, float)))[1:]
                     for p in extent["points_mm"]])


def marker_outline(extent: dict | None) -> dict | None:
    """What a marker draws as a polygon: a polygon extent (None for ellipses, boxes and points)."""
    return extent if extent and extent.get("kind") == "polygon" else None


def extent_radii(extent: dict | None) -> tuple[float, float, float]:
    """Semi-axes (mm, along LPS x, y, z) that draw a lesion's extent; a point lesion gets the default.

    The one rule for every marker: the open read's lesions, other readers'
    lesions shown to an adjudicator, and lesions from files.
    """
    if not extent:
        return (DEFAULT_RADIUS_MM,) * 3
    sizes = extent_sizes(extent)[0]
    return tuple(max(s / 2, 1.0) for s in sizes)  # type: ignore[return-value]


def marker_at(cuts: list[ScreenMarker], row: float, col: float, mapping: PlaneMapping,
              tolerance_mm: float = 2.0) -> ScreenMarker | None:
    """The marker drawn under image position (row, column), or None.

    A click hits a marker inside its drawn ellipse or within ``tolerance_mm``
    of its outline; of several, the one whose centre is nearest wins.
    """
    best, best_distance = None, np.inf
    for cut in cuts:
        dx = (col - cut.col) * mapping.col_mm
        dy = (row - cut.row) * mapping.row_mm
        a = cut.col_radius * mapping.col_mm + tolerance_mm
        b = cut.row_radius * mapping.row_mm + tolerance_mm
        if (dx / a) ** 2 + (dy / b) ** 2 <= 1.0:
            distance = float(np.hypot(dx, dy))
            if distance < best_distance:
                best, best_distance = cut, distance
    return best


def lesion_label(lesion: Lesion, taxonomy: Taxonomy) -> str:
    """A lesion as its marker names it: id, site label (or "no site") and side ("L2 Distal femur L")."""
    site = taxonomy.site(lesion.site_id).label if lesion.site_id else "no site"
    return f"{lesion.lesion_id} {site}{' ' + lesion.side if lesion.side else ''}"


def lesion_marker(lesion: Lesion, label: str, colour: str, key: str, *, selected: bool = False,
                  position: tuple[float, float, float] | None = None) -> Marker:
    """The marker of a lesion: its position (or ``position``), the ellipsoid and outline of its extent."""
    return Marker(tuple(position or lesion.position), extent_radii(lesion.extent), label,  # type: ignore[arg-type]
                  colour, selected, key, marker_outline(lesion.extent))


def read_markers(lesions: Iterable[Lesion], taxonomy: Taxonomy, selected: str | None = None) -> list[Marker]:
    """Markers of the open read's lesions, keyed by lesion id; ``selected`` is the chosen lesion's id."""
    out = []
    for lesion in lesions:
        chosen = lesion.lesion_id == selected
        colour = SELECTED_COLOUR if chosen else (UNPLACED_COLOUR if lesion.site_id is None else LESION_COLOUR)
        out.append(lesion_marker(lesion, lesion_label(lesion, taxonomy), colour, lesion.lesion_id, selected=chosen))
    return out


def reader_markers(reads: Iterable[Read]) -> list[Marker]:
    """Markers of other readers' reads (an adjudicator's view): each read in its colour, labels led by the reader."""
    out = []
    for n, read in enumerate(reads):
        taxonomy, colour = load_taxonomy(read.taxonomy), READER_COLOURS[n % len(READER_COLOURS)]
        out += [lesion_marker(lesion, f"{read.reader} {lesion_label(lesion, taxonomy)}", colour,
                              f"{read.reader}/{lesion.lesion_id}") for lesion in read.lesions]
    return out


def prior_markers(lesions: Iterable[Lesion], taxonomy: Taxonomy) -> list[Marker]:
    """Markers of the prior study's read, on the prior study, keyed ``prior:<tracking UID>``."""
    return [lesion_marker(lesion, lesion_label(lesion, taxonomy), PRIOR_COLOUR, f"prior:{lesion.tracking_uid}")
            for lesion in lesions]


def ghost_markers(ghosts: Iterable[Ghost], taxonomy: Taxonomy) -> list[Marker]:
    """Markers of prior lesions not yet confirmed on the current study, where the registration maps them."""
    return [lesion_marker(g.prior, f"prior {lesion_label(g.prior, taxonomy)} ?", GHOST_COLOUR,
                          f"ghost:{g.tracking_uid}", position=g.position) for g in ghosts if g.status is None]

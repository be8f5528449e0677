"""Measurements on displayed slices: a ruler in millimetres and regions of interest.

A ruler is kept in patient coordinates (LPS mm) with the view, plane and slice
it was drawn on, so it follows zoom and pan and shows only on its own slice.
Its length is the distance between its ends in patient space, whatever the
pixel spacing along rows and columns.

A region of interest (:class:`cno_annotate.annotation.model.Roi`) is kept in
LPS mm with its plane; it shows on every view of that plane whose displayed
slice holds it, and its statistics are those of the voxels of the volume
*that view displays* whose centres lie inside the outline (so one ellipse
drawn on STIR also measures T1 where both are shown). :func:`roi_mask`
rasterises the outline on the slice; :func:`roi_stats` summarises the voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cno_annotate.annotation.model import Roi, RoiKind
from cno_annotate.display.planes import PlaneMapping, extract, index_to_screen, plane_mapping
from cno_annotate.io.volume import Volume


@dataclass(frozen=True)
class Ruler:
    """A straight measurement between two LPS points on one slice of one view.

    ``frame`` is the study the view showed ("current", or "prior" beside it): the ruler shows only
    while the view shows that study.
    """

    view: str
    plane: str
    slice_index: int
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    frame: str = "current"

    @property
    def length_mm(self) -> float:
        """Distance between the ends, in mm."""
        return float(np.linalg.norm(np.subtract(self.end, self.start)))

    @property
    def label(self) -> str:
        """What the view writes beside the ruler."""
        return f"{self.length_mm:.1f} mm"


@dataclass(frozen=True)
class RoiStats:
    """Voxel statistics of a region of interest on one volume.

    ``mean``, ``sd`` (sample standard deviation, ``ddof=1``; 0 for one voxel),
    ``minimum`` and ``maximum`` are in the volume's units; ``area_mm2`` is the
    number of voxels inside times the in-plane voxel area.
    """

    count: int
    mean: float
    sd: float
    minimum: float
    maximum: float
    area_mm2: float

    @property
    def label(self) -> str:
        """What the view writes under the outline (three short lines)."""
        return (f"mean {self.mean:.1f}  SD {self.sd:.1f}\nmin {self.minimum:.0f}  max {self.maximum:.0f}\n"
                f"area {self.area_mm2:.1f} mm²")


@dataclass(frozen=True)
class ScreenRoi:
    """An ROI as one view draws it: its outline in image (row, column) and its statistics on the view's volume."""

    roi: Roi
    outline: np.ndarray
    stats: RoiStats | None
    title: str = ""
    selected: bool = False


def _screen_points(roi: Roi, volume: Volume, mapping: PlaneMapping) -> np.ndarray:
    """The ROI's points as (row, column) image coordinates on the plane of ``mapping`` (n x 2)."""
    return np.array([index_to_screen(mapping, volume.lps_to_index(np.asarray(p, float)))[1:]
                     for p in roi.points_mm])


def roi_outline(roi: Roi, volume: Volume, mapping: PlaneMapping) -> np.ndarray:
    """The ROI's outline as (row, column) image coordinates on the plane of ``mapping`` (n x 2).

    Ellipses are traced with 64 points; rectangles give their four corners.
    """
    screen = _screen_points(roi, volume, mapping)
    if roi.kind == RoiKind.POLYGON:
        return screen
    if roi.kind == RoiKind.RECTANGLE:
        (r0, c0), (r1, c1) = screen
        return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]])
    (rc, cc), (r1, c1) = screen
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return np.column_stack([rc + abs(r1 - rc) * np.sin(angles), cc + abs(c1 - cc) * np.cos(angles)])


def roi_slice(roi: Roi, volume: Volume, mapping: PlaneMapping) -> int | None:
    """The slice of this plane that holds the ROI, or None when it lies outside the volume."""
    index = index_to_screen(mapping, volume.lps_to_index(np.asarray(roi.points_mm[0], float)))[0]
    nearest = int(np.round(index))
    return nearest if 0 <= nearest < mapping.slices else None


def roi_mask(roi: Roi, volume: Volume, mapping: PlaneMapping) -> np.ndarray:
    """Which pixels of the ROI's slice (rows x columns of ``mapping``) have their centre inside the outline."""
    rows, cols = np.mgrid[0:mapping.rows, 0:mapping.cols].astype(float)
    screen = _screen_points(roi, volume, mapping)
    if roi.kind == RoiKind.ELLIPSE:
        (rc, cc), (r1, c1) = screen
        b, a = max(abs(r1 - rc), 1e-9), max(abs(c1 - cc), 1e-9)
        return ((rows - rc) / b) ** 2 + ((cols - cc) / a) ** 2 <= 1.0 + 1e-9
    if roi.kind == RoiKind.RECTANGLE:
        (r0, c0), (r1, c1) = screen
        eps = 1e-9
        return ((rows >= min(r0, r1) - eps) & (rows <= max(r0, r1) + eps)
                & (cols >= min(c0, c1) - eps) & (cols <= max(c0, c1) + eps))
    return _inside_polygon(rows, cols, screen)


def _inside_polygon(rows: np.ndarray, cols: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: whether each (row, column) lies inside the polygon."""
    inside = np.zeros(rows.shape, dtype=bool)
    r_prev, c_prev = vertices[-1]
    for r_next, c_next in vertices:
        crosses = (r_next > rows) != (r_prev > rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = c_next + (rows - r_next) * (c_prev - c_next) / (r_prev - r_next)
        inside ^= crosses & (cols < at)
        r_prev, c_prev = r_next, c_next
    return inside


def outline_holds(outline: np.ndarray, row: float, col: float) -> bool:
    """Whether image (row, column) lies inside an outline of (row, column) vertices."""
    return bool(_inside_polygon(np.array([row], float), np.array([col], float), outline)[0])


def roi_stats(roi: Roi, volume: Volume) -> RoiStats | None:
    """Mean, SD, min, max and area of the volume's voxels inside the ROI (None when no voxel is inside).

    Examples
    --------
    >>> import numpy as np
    >>> from cno_annotate.annotation.model import Roi
    >>> volume = Volume(np.full((3, 10, 10), 7.0, np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    >>> roi = Roi("R1", "rectangle", "axial", ((2.0, 2.0, 2.0), (4.0, 5.0, 2.0)), "x")
    >>> roi_stats(roi, volume).count, roi_stats(roi, volume).mean
    (12, 7.0)
    """
    mapping = plane_mapping(volume.affine, volume.shape, roi.plane)
    index = roi_slice(roi, volume, mapping)
    if index is None:
        return None
    values = extract(volume.array, mapping, index)[roi_mask(roi, volume, mapping)].astype(np.float64)
    if values.size == 0:
        return None
    return RoiStats(count=int(values.size), mean=float(values.mean()),
                    sd=float(values.std(ddof=1)) if values.size > 1 else 0.0,
                    minimum=float(values.min()), maximum=float(values.max()),
                    area_mm2=float(values.size * mapping.row_mm * mapping.col_mm))


def signal_ratio(lesion: Roi, reference: Roi, volume: Volume) -> float | None:
    """Lesion:reference signal-intensity ratio on ``volume`` (STIR lesion:muscle), or None when not measurable.

    The ratio of the mean voxel values inside each ROI; None when either ROI
    holds no voxel of the volume or the reference mean is not positive.
    """
    a, b = roi_stats(lesion, volume), roi_stats(reference, volume)
    if a is None or b is None or b.mean <= 0:
        return None
    return a.mean / b.mean

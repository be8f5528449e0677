"""Body regions of a composed whole-body volume: a coarse split by body proportions.

The body is found in the coronal maximum-intensity projection (signal above a
fraction of its bright end); its head-feet extent ``H`` and its width then cut
it into boxes: head and neck (top 17 % of ``H``), trunk, pelvis (38-53 %),
the arms (beside the trunk, outside 62 % of the half-width, from the shoulders
to the hands) and the legs (below 53 %, split at the midline). The boxes are
listed in priority order (arms, legs, pelvis, head and neck, trunk): where two
overlap, the first one holds the point.

An arm often touches the trunk, and on a narrow field of view it is cut at the
edge, so a box by proportions takes in flank tissue that moves with the trunk.
:func:`arm_boundaries` finds, row by row in the coronal maximum-intensity
projection, the darker seam between arm and trunk (skin and fat, dark in STIR
and T1 alike, or air); the arm is what lies lateral to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from cno_annotate.errors import CnoError
from cno_annotate.io.volume import Volume, apply_affine

#: Region names, in priority order.
REGION_NAMES = ("left_arm", "right_arm", "left_leg", "right_leg", "pelvis", "head_neck", "trunk")

#: Fractions of the body height (from the top) where regions start and end.
HEAD_NECK_END = 0.17
PELVIS_START = 0.38
LEGS_START = 0.53
PELVIS_END = 0.53
ARMS_END = 0.60
#: Arms lie outside this fraction of the half-width of the body (arms included).
ARM_LATERAL = 0.62
_FAR = 1.0e4


@dataclass(frozen=True)
class RegionBox:
    """A named LPS box (mm)."""

    name: str
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


def body_extent(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """LPS corners (lo, hi) of the body in a volume.

    Raises
    ------
    CnoError
        If nothing in the volume is brighter than its background.
    """
    array = np.asarray(volume.array, dtype=np.float32)
    level = 0.15 * float(np.percentile(array, 99.5))
    inside = array > level
    if level <= 0 or not inside.any():
        raise CnoError(f"volume {volume.volume_id or '?'} shows no body to register")
    k, j, i = (np.nonzero(inside.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    corners = np.array([[a, b, c] for a in (i[0], i[-1]) for b in (j[0], j[-1]) for c in (k[0], k[-1])], float)
    lps = apply_affine(volume.affine, corners)
    return lps.min(axis=0), lps.max(axis=0)


def body_regions(volume: Volume) -> list[RegionBox]:
    """The region boxes of a whole-body volume, in priority order."""
    lo, hi = body_extent(volume)
    top, height = float(hi[2]), float(hi[2] - lo[2])
    centre_x = float(lo[0] + hi[0]) / 2
    half_width = float(hi[0] - lo[0]) / 2
    arm_x = ARM_LATERAL * half_width

    def z(fraction: float) -> float:
        return top - fraction * height

    y_lo, y_hi = -_FAR, _FAR
    boxes = [
        RegionBox("left_arm", (centre_x + arm_x, y_lo, z(ARMS_END)), (_FAR, y_hi, z(HEAD_NECK_END))),
        RegionBox("right_arm", (-_FAR, y_lo, z(ARMS_END)), (centre_x - arm_x, y_hi, z(HEAD_NECK_END))),
        RegionBox("left_leg", (centre_x, y_lo, -_FAR), (_FAR, y_hi, z(LEGS_START))),
        RegionBox("right_leg", (-_FAR, y_lo, -_FAR), (centre_x, y_hi, z(LEGS_START))),
        RegionBox("pelvis", (-_FAR, y_lo, z(PELVIS_END)), (_FAR, y_hi, z(PELVIS_START))),
        RegionBox("head_neck", (-_FAR, y_lo, z(HEAD_NECK_END)), (_FAR, y_hi, _FAR)),
        RegionBox("trunk", (-_FAR, y_lo, z(PELVIS_START)), (_FAR, y_hi, z(HEAD_NECK_END))),
    ]
    return boxes


#: The seam between arm and trunk: a dip below this share of the brightest tissue on both sides of it.
SEAM_DEPTH = 0.75
#: Where the seam is looked for: this band of the body's half-width, from its centre outwards.
SEAM_BAND = (0.5, 0.97)
#: Fewest image rows with a seam for an arm to be told from the trunk.
MIN_SEAM_ROWS = 3
#: Most an axis of the volume may be tilted from an LPS axis for the projection (cosine).
AXIS_ALIGNED = 0.95


@dataclass(frozen=True)
class ArmBoundary:
    """The seam between one arm and the trunk: its x (LPS mm) at the rows (z) where it was seen.

    ``side`` is +1 for the left arm (towards LPS +x), -1 for the right arm.
    Between and beyond the rows seen, the seam is interpolated (held at the ends).
    """

    name: str
    side: float
    z_mm: np.ndarray
    x_mm: np.ndarray

    def x_at(self, z: np.ndarray) -> np.ndarray:
        """The seam's x at heights ``z``."""
        return np.interp(z, self.z_mm, self.x_mm)

    def lateral(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Whether points (x, z) lie on the arm's side of the seam."""
        return self.side * (np.asarray(x) - self.x_at(z)) > 0

    @property
    def medial_x(self) -> float:
        """The seam's innermost x: the arm's box starts there."""
        return float(self.x_mm.min() if self.side > 0 else self.x_mm.max())


def projection_axes(affine: np.ndarray) -> tuple[int, int, int] | None:
    """The array axes ``(k, j, i)`` numbering of LPS x, y and z, or None for an oblique volume."""
    linear = np.asarray(affine, float)[:3, :3]
    cosines = np.abs(linear / np.linalg.norm(linear, axis=0))  # [lps axis, i/j/k]
    index_axis = [int(np.argmax(cosines[row])) for row in range(3)]
    if len(set(index_axis)) < 3 or min(cosines[row, index_axis[row]] for row in range(3)) < AXIS_ALIGNED:
        return None
    ax_x, ax_y, ax_z = (2 - a for a in index_axis)
    return ax_x, ax_y, ax_z


def coronal_mip(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The maximum-intensity projection along LPS y as ``[z row, x column]``, with each row's z and column's x.

    None for a volume whose axes are not (close to) LPS axes.
    """
    axes = projection_axes(volume.affine)
    if axes is None:
        return None
    ax_x, ax_y, ax_z = axes
    mip = np.asarray(volume.array, dtype=np.float32).max(axis=ax_y)
    rest = [a for a in (0, 1, 2) if a != ax_y]
    if rest.index(ax_z) != 0:
        mip = mip.T
    affine = np.asarray(volume.affine, float)
    x_of = affine[0, 3] + np.arange(mip.shape[1]) * affine[0, 2 - ax_x]
    z_of = affine[2, 3] + np.arange(mip.shape[0]) * affine[2, 2 - ax_z]
    return mip, z_of, x_of


def arm_boundaries(volume: Volume, boxes: list[RegionBox]) -> dict[str, ArmBoundary]:
    """The seam between each arm and the trunk, where the coronal projection shows one.

    In each image row within the arm box's height, the darkest point of the
    (lightly smoothed) profile within :data:`SEAM_BAND` of the half-width is a
    seam when it lies below :data:`SEAM_DEPTH` of the brightest tissue on both
    its sides. An arm with fewer than :data:`MIN_SEAM_ROWS` such rows (or an
    oblique volume) is left out: its box is used as it is.
    """
    projected = coronal_mip(volume)
    arms = {b.name: b for b in boxes if b.name.endswith("_arm")}
    if projected is None or set(arms) != {"left_arm", "right_arm"}:
        return {}
    mip, z_of, x_of = projected
    mip = ndimage.uniform_filter1d(mip, 3, axis=1)
    left, right = arms["left_arm"], arms["right_arm"]
    centre = (left.lo[0] + right.hi[0]) / 2
    half = (left.lo[0] - centre) / ARM_LATERAL
    out = {}
    for name, box in arms.items():
        side = 1.0 if name == "left_arm" else -1.0
        offset = side * (x_of - centre)
        columns = np.nonzero((offset >= SEAM_BAND[0] * half) & (offset <= SEAM_BAND[1] * half))[0]
        columns = columns[np.argsort(offset[columns])]  # inside out
        if len(columns) < 5:
            continue
        seen_z, seen_x = [], []
        for row in np.nonzero((z_of >= box.lo[2]) & (z_of <= box.hi[2]))[0]:
            profile = mip[row, columns]
            low = int(np.argmin(profile[1:-1])) + 1
            if profile[low] < SEAM_DEPTH * min(profile[:low].max(), profile[low + 1:].max()):
                seen_z.append(z_of[row])
                seen_x.append(x_of[columns[low]])
        if len(seen_z) >= MIN_SEAM_ROWS:
            order = np.argsort(seen_z)
            out[name] = ArmBoundary(name, side, np.asarray(seen_z, float)[order], np.asarray(seen_x, float)[order])
    return out


def with_arm_seams(boxes: list[RegionBox], seams: dict[str, ArmBoundary]) -> list[RegionBox]:
    """The boxes with each arm's inner side moved to its seam's innermost point."""
    out = []
    for box in boxes:
        seam = seams.get(box.name)
        if seam is None:
            out.append(box)
        elif seam.side > 0:
            out.append(replace(box, lo=(seam.medial_x, box.lo[1], box.lo[2])))
        else:
            out.append(replace(box, hi=(seam.medial_x, box.hi[1], box.hi[2])))
    return out

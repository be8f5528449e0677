"""Body regions of a composed whole-body volume: a coarse split by body proportions.

The body is found in the coronal maximum-intensity projection (signal above a
fraction of its bright end); its head-feet extent ``H`` and its width then cut
it into boxes: head and neck (top 17 % of ``H``), trunk, pelvis (38-53 %),
the arms (beside the trunk, outside 62 % of the half-width, from the shoulders
to the hands) and the legs (below 53 %, split at the midline). The boxes are
listed in priority order (arms, legs, pelvis, head and neck, trunk): where two
overlap, the first one holds the point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

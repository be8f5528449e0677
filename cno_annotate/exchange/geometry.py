"""A lesion's region as SCOORD3D and back, and its extent as a voxel mask.

Regions are drawn in the plane the extent was drawn in, at the lesion's
position along that plane's normal; the extent along the normal travels as two
measurements (``99CNO SLAB-LOW`` / ``SLAB-HIGH``).

- no extent: ``POINT`` at the position;
- ellipse: ``ELLIPSE``, four points, the major axis ends then the minor axis ends
  (the axis along the screen columns first when both radii are equal);
- polygon: closed ``POLYGON`` (the first point repeated at the end);
- box: a closed five-point ``POLYGON`` in the coronal plane, corners in the order
  (x min, z min), (x max, z min), (x max, z max), (x min, z max); the box's
  anterior-posterior range is the slab.

SCOORD3D stores 32-bit floats, so coordinates read back are rounded to
:data:`DECIMALS` decimals of a millimetre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cno_annotate.annotation.model import PLANE_AXES, Lesion

DECIMALS = 3
BOX_PLANE = "coronal"


@dataclass(frozen=True)
class Region:
    """A SCOORD3D region: graphic type, points (n x 3, LPS mm) and the slab along the plane normal."""

    graphic_type: str
    points: np.ndarray
    slab: tuple[float, float] | None = None


def region_of(lesion: Lesion) -> Region:
    """The SCOORD3D region of a lesion."""
    extent = lesion.extent
    position = np.asarray(lesion.position, float)
    if extent is None:
        return Region("POINT", position[None, :])
    if extent["kind"] == "box":
        low, high = np.asarray(extent["min_mm"], float), np.asarray(extent["max_mm"], float)
        col, row, normal = PLANE_AXES[BOX_PLANE]
        corners: list[np.ndarray] = []
        for u, v in ((low[col], low[row]), (high[col], low[row]), (high[col], high[row]), (low[col], high[row])):
            point = np.empty(3)
            point[col], point[row], point[normal] = u, v, position[normal]
            corners.append(point)
        corners.append(corners[0])
        return Region("POLYGON", np.array(corners), (float(low[normal]), float(high[normal])))
    col, row, normal = PLANE_AXES[extent["plane"]]
    slab = (float(extent["slice_range_mm"][0]), float(extent["slice_range_mm"][1]))
    if extent["kind"] == "ellipse":
        a, b = (float(r) for r in extent["radii_mm"])
        axes = [(col, a), (row, b)] if a >= b else [(row, b), (col, a)]
        points = []
        for axis, radius in axes:
            for sign in (-1.0, 1.0):
                point = position.copy()
                point[axis] += sign * radius
                points.append(point)
        return Region("ELLIPSE", np.array(points), slab)
    polygon = np.array(extent["points_mm"], float)
    polygon[:, normal] = position[normal]
    return Region("POLYGON", np.vstack([polygon, polygon[:1]]), slab)


def _r(value) -> float:
    return float(np.round(float(value), DECIMALS))


def plane_of(points: np.ndarray) -> str | None:
    """The orthogonal plane (axial, coronal, sagittal) all points lie in, or None."""
    for plane, (_, _, normal) in PLANE_AXES.items():
        if np.ptp(np.round(points[:, normal], DECIMALS)) == 0:
            return plane
    return None


def lesion_geometry(region: Region) -> tuple[tuple[float, float, float], dict | None]:
    """Position and extent of a lesion from its region (inverse of :func:`region_of`).

    Raises
    ------
    ValueError
        With the reason, for a region that is not a point, ellipse or polygon in an
        orthogonal plane.
    """
    points = np.round(np.asarray(region.points, float), DECIMALS)
    if region.graphic_type == "POINT":
        if len(points) != 1:
            raise ValueError("a POINT region needs one point")
        return (_r(points[0][0]), _r(points[0][1]), _r(points[0][2])), None
    plane = plane_of(points)
    if plane is None:
        raise ValueError(f"the {region.graphic_type} region is not in an axial, coronal or sagittal plane")
    col, row, normal = PLANE_AXES[plane]
    level = _r(points[0][normal])
    if region.graphic_type == "ELLIPSE":
        return _ellipse(points, plane, level, region.slab)
    if region.graphic_type == "POLYGON":
        return _polygon(points, plane, level, region.slab)
    raise ValueError(f"graphic type {region.graphic_type} is not a point, ellipse or polygon")


def _default_slab(level: float, half_depth: float) -> tuple[float, float]:
    return _r(level - half_depth), _r(level + half_depth)


def _ellipse(points: np.ndarray, plane: str, level: float, slab) -> tuple[tuple, dict]:
    if len(points) != 4:
        raise ValueError("an ELLIPSE region needs four points")
    col, row, normal = PLANE_AXES[plane]
    centre = (points[0] + points[1]) / 2
    radii = {}
    for first, second in ((points[0], points[1]), (points[2], points[3])):
        direction = np.abs(second - first)
        axis = int(np.argmax(direction))
        if axis == normal or np.count_nonzero(np.round(direction, DECIMALS)) != 1:
            raise ValueError("the ellipse's axes are not along the image rows and columns")
        radii[axis] = _r(direction[axis] / 2)
    if set(radii) != {col, row} or min(radii.values()) <= 0:
        raise ValueError("the ellipse's axes are not along the image rows and columns")
    position = [0.0, 0.0, 0.0]
    position[col], position[row], position[normal] = _r(centre[col]), _r(centre[row]), level
    low, high = slab if slab is not None else _default_slab(level, min(radii.values()))
    extent = {"kind": "ellipse", "plane": plane, "radii_mm": [radii[col], radii[row]], "slice_range_mm": [low, high]}
    return (position[0], position[1], position[2]), extent


def _polygon(points: np.ndarray, plane: str, level: float, slab) -> tuple[tuple, dict]:
    if len(points) > 1 and np.array_equal(points[0], points[-1]):
        points = points[:-1]
    if len(points) < 3:
        raise ValueError("a POLYGON region needs at least three distinct points")
    col, row, normal = PLANE_AXES[plane]
    u, v = points[:, col], points[:, row]
    low_u, high_u, low_v, high_v = _r(u.min()), _r(u.max()), _r(v.min()), _r(v.max())
    if slab is None:
        slab = _default_slab(level, max(min(high_u - low_u, high_v - low_v) / 2, 0.5))
    position = [0.0, 0.0, 0.0]
    position[col], position[row], position[normal] = _r((low_u + high_u) / 2), _r((low_v + high_v) / 2), level
    box_order = [(low_u, low_v), (high_u, low_v), (high_u, high_v), (low_u, high_v)]
    if plane == BOX_PLANE and len(points) == 4 and [(_r(a), _r(b)) for a, b in zip(u, v)] == box_order:
        low, high = [0.0] * 3, [0.0] * 3
        low[col], low[row], low[normal] = low_u, low_v, _r(slab[0])
        high[col], high[row], high[normal] = high_u, high_v, _r(slab[1])
        centre = [_r((a + b) / 2) for a, b in zip(low, high)]
        centre[normal] = level
        return (centre[0], centre[1], centre[2]), {"kind": "box", "min_mm": low, "max_mm": high}
    polygon = [[_r(c) for c in p] for p in points]
    extent = {"kind": "polygon", "plane": plane, "points_mm": polygon, "slice_range_mm": [_r(slab[0]), _r(slab[1])]}
    return (position[0], position[1], position[2]), extent


def extent_mask(lesion: Lesion, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Voxels of a grid (``shape`` = slices, rows, columns) whose centres lie in the lesion's extent.

    A lesion without an extent has an empty mask; an extent smaller than a voxel
    marks the voxel nearest its position.
    """
    mask = np.zeros(shape, bool)
    extent = lesion.extent
    if extent is None:
        return mask
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).reshape(-1, 4).astype(float)
    lps = (ijk @ np.asarray(affine, float).T)[:, :3]
    position = np.asarray(lesion.position, float)
    if extent["kind"] == "box":
        inside = np.all((lps >= np.asarray(extent["min_mm"])) & (lps <= np.asarray(extent["max_mm"])), axis=1)
    else:
        col, row, normal = PLANE_AXES[extent["plane"]]
        low, high = sorted(extent["slice_range_mm"])
        within = (lps[:, normal] >= low) & (lps[:, normal] <= high)
        if extent["kind"] == "ellipse":
            a, b = extent["radii_mm"]
            du, dv = (lps[:, col] - position[col]) / a, (lps[:, row] - position[row]) / b
            inside = within & (du ** 2 + dv ** 2 <= 1.0)
        else:
            polygon = np.asarray(extent["points_mm"], float)[:, [col, row]]
            inside = within & _in_polygon(lps[:, [col, row]], polygon)
    mask = inside.reshape(shape)
    if not mask.any():
        nearest = np.round((np.linalg.inv(affine) @ np.append(position, 1.0))[:3]).astype(int)
        ii, jj, kk = (int(np.clip(n, 0, s - 1)) for n, s in zip(nearest, (shape[2], shape[1], shape[0])))
        mask[kk, jj, ii] = True
    return mask


def _in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which 2-D points lie inside the polygon."""
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), bool)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at)
    return inside

"""Compose multi-station series into one whole-body volume.

Whole-body MRI is acquired as stations (one series each) stepping from head
to feet with some overlap. :func:`plan_chains` decides from geometry alone
which stacks of a study belong together; :func:`compose` puts their pixels on
one grid in patient coordinates, blending overlaps with linear feathering.

Stations of one protocol share direction and voxel size but the table moves by
any number of millimetres, so a station usually sits a fraction of a voxel off
the common grid. Such a pure translation is resampled exactly (trilinear) as
one linear interpolation per axis with a constant fraction, in numpy, without
touching voxels twice. Stations with another direction or voxel size are
resampled with SimpleITK (linear).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from cno_annotate.uids import stable_uid

from cno_annotate.io.volume import Volume, apply_affine

#: Stations further apart than this along head-feet (mm) do not chain.
MAX_GAP_MM = 10.0
#: Stations overlapping by more than this fraction are repeats, not neighbours.
MAX_OVERLAP_FRACTION = 0.5
#: Stations must share at least this fraction of their left-right extent.
MIN_SIDE_OVERLAP = 0.5
_ON_GRID = 1e-3


@dataclass(frozen=True)
class StackGeometry:
    """What chaining needs to know about a stack."""

    volume_id: str
    study_uid: str
    role: str
    orientation: str
    description: str
    affine: np.ndarray
    shape: tuple[int, int, int]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS bounding box (min, max) of the voxel centres."""
        corners = _corners(self.affine, self.shape)
        return corners.min(axis=0), corners.max(axis=0)


def composed_volume_id(member_ids: list[str]) -> str:
    """A stable UID for the composition of these stacks."""
    return stable_uid("composed", *member_ids)


def plan_chains(stacks: list[StackGeometry]) -> list[list[StackGeometry]]:
    """Group stacks into head-to-feet chains of at least two stations.

    Stacks chain when they belong to the same study, role (STIR / T1) and
    orientation, carry the same description once station numbers are
    removed, share most of their left-right extent, and follow each other
    along head-feet with an overlap (or a gap of at most 10 mm) that is not
    so large that one repeats the other.
    """
    groups: dict[tuple, list[StackGeometry]] = {}
    for stack in stacks:
        if stack.role not in ("STIR", "T1") or stack.orientation == "oblique":
            continue
        key = (stack.study_uid, stack.role, stack.orientation, _station_free(stack.description))
        groups.setdefault(key, []).append(stack)
    chains = []
    for members in groups.values():
        members.sort(key=lambda s: -s.bounds()[1][2])  # top of the head first
        chain = [members[0]]
        for stack in members[1:]:
            if _follows(chain[-1], stack):
                chain.append(stack)
            else:
                if len(chain) > 1:
                    chains.append(chain)
                chain = [stack]
        if len(chain) > 1:
            chains.append(chain)
    return chains


def _station_free(description: str) -> str:
    """A description with station markers and numbers removed."""
    text = re.sub(r"(station|stat|st|bed|level|lvl)[\s_-]*\d+", "", description.lower())
    return re.sub(r"[\d\s_-]+", " ", text).strip()


def _follows(upper: StackGeometry, lower: StackGeometry) -> bool:
    (u_lo, u_hi), (l_lo, l_hi) = upper.bounds(), lower.bounds()
    overlap = l_hi[2] - u_lo[2]  # negative: a gap between them
    if overlap < -MAX_GAP_MM:
        return False
    height = min(u_hi[2] - u_lo[2], l_hi[2] - l_lo[2])
    if height > 0 and overlap > MAX_OVERLAP_FRACTION * height:
        return False
    side = min(u_hi[0], l_hi[0]) - max(u_lo[0], l_lo[0])
    width = min(u_hi[0] - u_lo[0], l_hi[0] - l_lo[0])
    return width <= 0 or side >= MIN_SIDE_OVERLAP * width


def _corners(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    k, j, i = shape
    ijk = np.array([[a, b, c] for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)], float)
    return apply_affine(affine, ijk)


def compose(stations: list[Volume], volume_id: str | None = None) -> Volume:
    """Compose station volumes into one volume on a common grid.

    Parameters
    ----------
    stations : list of Volume
        The stations of one chain, any order.
    volume_id : str, optional
        Id of the result; by default :func:`composed_volume_id` of the members.

    Returns
    -------
    Volume
        On the grid of :func:`composed_geometry`; overlaps are blended with
        weights that fall linearly towards each station's head and feet edges.
    """
    stations = sorted(stations, key=lambda v: -_corners(v.affine, v.shape)[:, 2].max())
    grid_affine, shape = composed_geometry([(v.affine, v.shape) for v in stations])
    direction = grid_affine[:3, :3] / np.linalg.norm(grid_affine[:3, :3], axis=0)
    # The array axis (k, j, i) most aligned with head-feet carries the blend.
    hf_axis = 2 - int(np.argmax(np.abs(direction[2, :])))
    inverse = np.linalg.inv(grid_affine)
    placed = [_place(station, inverse, shape) for station in stations]
    out = np.zeros(shape, dtype=np.float32)
    same_extent = len({tuple(b[:hf_axis] + b[hf_axis + 1:]) for b, _, _ in placed}) == 1
    if same_extent and all(coverage is None for _, _, coverage in placed):
        _blend_rows(out, placed, hf_axis)
    else:
        _blend_voxels(out, placed, hf_axis)
    members = [v.volume_id for v in stations]
    return Volume(
        array=out,
        affine=grid_affine,
        volume_id=volume_id or composed_volume_id(members),
        role=stations[0].role,
        meta={"stations": len(stations), "members": members},
    )


def composed_geometry(geometries: list[tuple[np.ndarray, tuple[int, int, int]]]):
    """Affine and shape of the composition of stacks given as (affine, shape).

    The grid takes the direction of the head-most stack and the finest
    spacing of all, and covers every stack. Used to describe a composed
    volume before any pixel is read.
    """
    geometries = sorted(geometries, key=lambda g: -_corners(*g)[:, 2].max())
    reference = geometries[0][0]
    direction = reference[:3, :3] / np.linalg.norm(reference[:3, :3], axis=0)
    spacing = np.min([np.linalg.norm(a[:3, :3], axis=0) for a, _ in geometries], axis=0)
    reference_origin = reference[:3, 3]
    mins, maxs = [], []
    for affine, shape in geometries:
        local = (_corners(affine, shape) - reference_origin) @ direction
        mins.append(local.min(axis=0))
        maxs.append(local.max(axis=0))
    lo, hi = np.min(mins, axis=0), np.max(maxs, axis=0)
    counts = np.floor((hi - lo) / spacing + _ON_GRID).astype(int) + 1  # never past the last voxel
    grid = np.eye(4)
    grid[:3, :3] = direction * spacing
    grid[:3, 3] = reference_origin + direction @ lo
    return grid, (int(counts[2]), int(counts[1]), int(counts[0]))


def _place(station: Volume, inverse: np.ndarray, shape):
    """Where a station lands in the grid, and its voxels on the grid there.

    Returns ``(box, data, coverage)``: ``box`` is ``[(start, stop)]`` per
    array axis, ``data`` the station's values on those grid voxels, and
    ``coverage`` ``None`` when every voxel of the box is inside the station,
    else a 0/1 array of the voxels that are.
    """
    corners = apply_affine(inverse, _corners(station.affine, station.shape))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    grid_size = np.array([shape[2], shape[1], shape[0]])
    axes_map = inverse[:3, :3] @ station.affine[:3, :3]
    if np.allclose(np.abs(axes_map), np.eye(3), atol=1e-3):
        start = np.clip(np.ceil(lo - _ON_GRID).astype(int), 0, None)
        stop = np.minimum(np.floor(hi + _ON_GRID).astype(int) + 1, grid_size)
        box = [(int(start[a]), int(stop[a])) for a in (2, 1, 0)]
        data = _translate(_in_grid_order(station.array, axes_map), start - lo, stop - start)
        return box, data, None
    start = np.clip(np.floor(lo).astype(int), 0, None)
    stop = np.minimum(np.ceil(hi).astype(int) + 1, grid_size)
    box = [(int(start[a]), int(stop[a])) for a in (2, 1, 0)]
    data, coverage = _resample(station, np.linalg.inv(inverse), box)
    return box, data, coverage


def _in_grid_order(array: np.ndarray, axes_map: np.ndarray) -> np.ndarray:
    """Flip the station's axes that run against the grid's."""
    for index_axis in range(3):
        if axes_map[index_axis, index_axis] < 0:
            array = np.flip(array, axis=2 - index_axis)
    return array


def _translate(array: np.ndarray, fraction: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sample a volume at a sub-voxel offset: one linear interpolation per axis.

    ``fraction[a]`` (index order i, j, k) is where the first grid voxel falls
    between station voxels 0 and 1 along axis ``a``; ``counts[a]`` how many
    grid voxels to produce. Exact trilinear interpolation of a translation.
    """
    out = array
    for index_axis in range(3):
        axis = 2 - index_axis
        f = float(fraction[index_axis])
        n = int(counts[index_axis])
        first = out[_along(axis, slice(0, n))]
        if f > _ON_GRID and n < out.shape[axis]:
            second = out[_along(axis, slice(1, n + 1))]
            blended = np.subtract(second, first, dtype=np.float32)
            blended *= f
            blended += first
            first = blended
        out = first
    return np.ascontiguousarray(out, dtype=np.float32)


def _resample(station: Volume, grid_affine: np.ndarray, box):
    """Linear resampling of a station onto a box of the grid (SimpleITK)."""
    import SimpleITK as sitk

    origin = apply_affine(grid_affine, np.array([box[2][0], box[1][0], box[0][0]], float))
    spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
    reference = sitk.Image([box[2][1] - box[2][0], box[1][1] - box[1][0], box[0][1] - box[0][0]], sitk.sitkFloat32)
    reference.SetOrigin(origin.tolist())
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection((grid_affine[:3, :3] / spacing).flatten().tolist())
    outputs = []
    for array in (station.array, np.ones(station.shape, np.float32)):
        image = _to_sitk(array, station.affine)
        result = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        outputs.append(sitk.GetArrayFromImage(result))
    data, coverage = outputs
    return data, (coverage > 0.5).astype(np.float32)


def _to_sitk(array: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection((affine[:3, :3] / spacing).flatten().tolist())
    return image


def _feather_weights(placed, axis: int) -> list[np.ndarray]:
    """Per station, weights along head-feet that rise over the largest overlap."""
    spans = [box[axis] for box, _, _ in placed]
    ordered = sorted(spans)
    overlaps = [a[1] - b[0] for a, b in zip(ordered, ordered[1:])]
    ramp = max([o for o in overlaps if o > 0], default=1)
    weights = []
    for start, stop in spans:
        r = np.arange(stop - start, dtype=np.float32)
        edge = np.minimum(r + 1, stop - start - r)
        weights.append(np.minimum(edge / (ramp + 1), 1.0).astype(np.float32))
    return weights


def _along(axis: int, rows) -> tuple:
    """An index that selects ``rows`` along ``axis`` of a 3-D array."""
    index: list = [slice(None)] * 3
    index[axis] = rows
    return tuple(index)


def _blend_rows(out: np.ndarray, placed, axis: int) -> None:
    """Blend stations that share their extent across head-feet (the fast path).

    Rows with full weight are copied; only the ramp rows near station edges
    are weighted, summed and normalised.
    """
    total = np.zeros(out.shape[axis], dtype=np.float32)
    for (box, data, _), w in zip(placed, _feather_weights(placed, axis)):
        region = out[tuple(slice(lo, hi) for lo, hi in box)]
        full = np.nonzero(w >= 1.0)[0]
        first, last = (int(full[0]), int(full[-1]) + 1) if full.size else (w.size, w.size)
        region[_along(axis, slice(first, last))] += data[_along(axis, slice(first, last))]
        for rows in (slice(0, first), slice(last, w.size)):
            shape = [1, 1, 1]
            shape[axis] = rows.stop - rows.start
            region[_along(axis, rows)] += data[_along(axis, rows)] * w[rows].reshape(shape)
        total[box[axis][0]:box[axis][1]] += w
    rows = np.nonzero((total > 0) & (np.abs(total - 1.0) > 1e-6))[0]
    shape = [1, 1, 1]
    shape[axis] = rows.size
    out[_along(axis, rows)] /= total[rows].reshape(shape)


def _blend_voxels(out: np.ndarray, placed, axis: int) -> None:
    """Blend stations with per-voxel weights (different extents or resampled)."""
    total = np.zeros(out.shape, dtype=np.float32)
    for (box, data, coverage), w in zip(placed, _feather_weights(placed, axis)):
        region = tuple(slice(lo, hi) for lo, hi in box)
        shape = [1, 1, 1]
        shape[axis] = w.size
        local = w.reshape(shape) if coverage is None else w.reshape(shape) * coverage
        out[region] += data * local
        total[region] += local
    np.divide(out, total, out=out, where=total > 0)

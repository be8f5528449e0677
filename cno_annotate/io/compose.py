"""Compose multi-station series into one whole-body volume.

Whole-body MRI is acquired as stations (one series each) stepping from head
to feet with some overlap. :func:`plan_chains` decides from geometry alone
which stacks of a study belong together; :func:`compose` puts their pixels on
one grid in patient coordinates, blending overlaps with linear feathering.

When the stations share direction and spacing and sit on whole-voxel offsets
(the usual case: same protocol, table moves), slices are copied without
interpolation. Otherwise each station is resampled (linear, SimpleITK) onto
the grid of the first one.
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
_ON_GRID = 0.01


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
        On the grid of the first (head-most) station, extended to cover all
        stations; overlaps are blended linearly along head-feet.
    """
    stations = sorted(stations, key=lambda v: -_corners(v.affine, v.shape)[:, 2].max())
    grid_affine, shape = composed_geometry([(v.affine, v.shape) for v in stations])
    direction = grid_affine[:3, :3] / np.linalg.norm(grid_affine[:3, :3], axis=0)
    out = np.zeros(shape, dtype=np.float32)
    # The array axis (k, j, i) most aligned with head-feet carries the blend.
    hf_index_axis = int(np.argmax(np.abs(direction[2, :])))
    hf_array_axis = 2 - hf_index_axis
    weights = np.zeros(shape[hf_array_axis], dtype=np.float32)
    full_weights = None
    inverse = np.linalg.inv(grid_affine)
    placements = [_place(station, inverse, shape) for station in stations]
    same_extent = len({tuple(p[0][:hf_array_axis] + p[0][hf_array_axis + 1:]) for p in placements}) == 1
    ramp = _ramp_lengths(placements, hf_array_axis)
    for station, (box, resampled) in zip(stations, placements):
        data = resampled if resampled is not None else _on_grid(station, grid_affine, box)
        region = tuple(slice(lo, hi) for lo, hi in box)
        w = _feather(box[hf_array_axis], ramp)
        shape_w = [1, 1, 1]
        shape_w[hf_array_axis] = w.size
        w3 = w.reshape(shape_w)
        coverage = None
        if resampled is not None:
            coverage = np.asarray(data > np.finfo(np.float32).tiny, dtype=np.float32)
        if same_extent and coverage is None and full_weights is None:
            out[region] += data * w3
            weights[box[hf_array_axis][0]:box[hf_array_axis][1]] += w
        else:
            if full_weights is None:
                full_weights = _expand(weights, shape, hf_array_axis)
            local = w3 if coverage is None else w3 * coverage
            out[region] += data * local
            full_weights[region] += local
    norm = full_weights if full_weights is not None else _expand(weights, shape, hf_array_axis, lazy=True)
    np.divide(out, norm, out=out, where=norm > 0)
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
    counts = np.floor((hi - lo) / spacing + 0.5 + _ON_GRID).astype(int) + 1
    grid = np.eye(4)
    grid[:3, :3] = direction * spacing
    grid[:3, 3] = reference_origin + direction @ lo
    return grid, (int(counts[2]), int(counts[1]), int(counts[0]))


def _place(station: Volume, inverse: np.ndarray, shape) -> tuple[list[tuple[int, int]], np.ndarray | None]:
    """Where a station lands in the grid; resampled data if not on whole voxels."""
    corners = apply_affine(inverse, _corners(station.affine, station.shape))
    lo = corners.min(axis=0)
    hi = corners.max(axis=0)
    same_axes = np.allclose(
        np.abs(inverse[:3, :3] @ station.affine[:3, :3]), np.eye(3), atol=1e-3
    )
    on_grid = same_axes and np.all(np.abs(lo - np.round(lo)) < _ON_GRID)
    start = np.clip(np.round(lo).astype(int) if on_grid else np.floor(lo).astype(int), 0, None)
    stop = np.minimum(np.round(hi).astype(int) + 1 if on_grid else np.ceil(hi).astype(int) + 1,
                      [shape[2], shape[1], shape[0]])
    box = [(int(start[2]), int(stop[2])), (int(start[1]), int(stop[1])), (int(start[0]), int(stop[0]))]
    if on_grid:
        return box, None
    return box, _resample(station, np.linalg.inv(inverse), box)


def _on_grid(station: Volume, grid_affine: np.ndarray, box) -> np.ndarray:
    """A station whose voxels coincide with the grid, flipped into grid order."""
    data = station.array
    axes_map = np.linalg.inv(grid_affine[:3, :3]) @ station.affine[:3, :3]
    for index_axis in range(3):
        if axes_map[index_axis, index_axis] < 0:
            data = np.flip(data, axis=2 - index_axis)
    return data


def _resample(station: Volume, grid_affine: np.ndarray, box) -> np.ndarray:
    """Linear resampling of a station onto a box of the grid (SimpleITK)."""
    import SimpleITK as sitk

    image = _to_sitk(station.array, station.affine)
    origin = apply_affine(grid_affine, np.array([box[2][0], box[1][0], box[0][0]], float))
    spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
    direction = grid_affine[:3, :3] / spacing
    reference = sitk.Image([box[2][1] - box[2][0], box[1][1] - box[1][0], box[0][1] - box[0][0]], sitk.sitkFloat32)
    reference.SetOrigin(origin.tolist())
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection(direction.flatten().tolist())
    result = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(result)


def _to_sitk(array: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection((affine[:3, :3] / spacing).flatten().tolist())
    return image


def _ramp_lengths(placements, axis: int) -> int:
    """Feather length: the largest overlap between neighbouring stations."""
    spans = sorted(p[0][axis] for p in placements)
    overlaps = [a[1] - b[0] for a, b in zip(spans, spans[1:])]
    return max([o for o in overlaps if o > 0], default=1)


def _feather(span: tuple[int, int], ramp: int) -> np.ndarray:
    """Weights that rise over ``ramp`` voxels from each end of a station."""
    n = span[1] - span[0]
    r = np.arange(n, dtype=np.float32)
    edge = np.minimum(r + 1, n - r)
    return np.minimum(edge / (ramp + 1), 1.0).astype(np.float32)


def _expand(weights: np.ndarray, shape, axis: int, lazy: bool = False) -> np.ndarray:
    view_shape = [1, 1, 1]
    view_shape[axis] = weights.size
    view = weights.reshape(view_shape)
    return view if lazy else np.broadcast_to(view, shape).astype(np.float32)

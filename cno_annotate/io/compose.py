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

import mmap
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from cno_annotate.io.roles import SequenceRole
from cno_annotate.io.volume import Volume, VolumeHeader, VolumeKind, apply_affine
from cno_annotate.uids import stable_uid
from cno_annotate.wording import counted

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
    variant: str = ""
    #: Sorts acquisitions in time (SeriesTime, SeriesNumber): the largest is the latest.
    acquired: tuple = ("", 0)
    #: Slices missing inside the stack (they carry no weight when composed).
    missing_slices: int = 0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS bounding box (min, max) of the voxel centres."""
        corners = _corners(self.affine, self.shape)
        return corners.min(axis=0), corners.max(axis=0)

    @property
    def height(self) -> float:
        """Head-feet extent of the voxel centres (mm)."""
        lo, hi = self.bounds()
        return float(hi[2] - lo[2])


@dataclass
class CompositionPlan:
    """How the stacks of one study, role, orientation and protocol compose, or why they do not.

    ``stations`` is the chain, head first: two or more when it composes, one
    when that station stands alone. ``alternatives`` lists the station
    positions that were acquired more than once: the acquisition used and the
    others. ``joins`` give, for each pair of neighbouring stations, their
    overlap in mm (negative: a gap).
    """

    study_uid: str
    role: str
    orientation: str
    protocol: str
    variant: str
    stations: list[StackGeometry]
    alternatives: list[dict] = field(default_factory=list)
    joins: list[dict] = field(default_factory=list)
    empty_rows: int = 0
    ends: list[str] = field(default_factory=list)

    @property
    def composed(self) -> bool:
        """Whether the chain has two or more stations (and so a composed volume)."""
        return len(self.stations) > 1

    @property
    def volume_id(self) -> str | None:
        """The composed volume's id (``None`` when it does not compose)."""
        return composed_volume_id([s.volume_id for s in self.stations]) if self.composed else None

    @property
    def message(self) -> str:
        """One sentence: how it composed (stations, overlaps, gaps in mm) or why it did not."""
        what = f"{self.role} {self.orientation}" + (f" {self.variant}" if self.variant else "")
        if self.composed:
            joins = ", ".join(f"overlap {j['overlap_mm']:.1f} mm" if j["overlap_mm"] >= 0
                              else f"gap {-j['overlap_mm']:.1f} mm" for j in self.joins)
            text = f"{what}: composed from {len(self.stations)} stations ({joins})"
        else:
            text = f"{what}: station {self.stations[0].volume_id} not composed"
        notes = list(self.ends)
        if self.composed and self.empty_rows:
            notes.append(f"FLAGGED: {self.empty_rows} empty rows inside the composite (a gap between stations)")
        for station in self.stations:
            if station.missing_slices:
                notes.append(f"FLAGGED: station {station.volume_id} misses {counted(station.missing_slices, 'slice')} "
                             "(no weight in blending; empty where no other station covers them)")
        for alternative in self.alternatives:
            others = ", ".join(alternative["others"])
            notes.append(f"station {alternative['position']} acquired {len(alternative['others']) + 1} times: "
                         f"using {alternative['used']} ({alternative['why']}), alternative {others}")
        return "; ".join([text, *notes]) if notes else text

    def detail(self) -> dict:
        """JSON-ready description (for the store and ``--json``)."""
        return {
            "role": self.role, "orientation": self.orientation, "protocol": self.protocol,
            "variant": self.variant, "composed": self.volume_id,
            "stations": [s.volume_id for s in self.stations], "joins": self.joins,
            "alternatives": self.alternatives, "empty_rows": self.empty_rows,
            "missing_slices": {s.volume_id: s.missing_slices for s in self.stations if s.missing_slices},
            "message": self.message,
        }


def composed_volume_id(member_ids: list[str]) -> str:
    """A stable UID for the composition of these stacks."""
    return stable_uid("composed", *member_ids)


def plan_chains(stacks: list[StackGeometry]) -> list[list[StackGeometry]]:
    """The head-to-feet chains of at least two stations (see :func:`plan_compositions`)."""
    return [plan.stations for plan in plan_compositions(stacks) if plan.composed]


def plan_compositions(stacks: list[StackGeometry], chosen: Collection[str] = ()) -> list[CompositionPlan]:
    """Decide, from geometry alone, which stacks compose and say why others do not.

    Stacks chain when they belong to the same study, role (STIR / T1),
    orientation and variant, carry the same description once station numbers
    are removed, share most of their left-right extent, and follow each other
    along head-feet with an overlap, or a gap of at most 10 mm. Stacks that
    overlap by more than half their height are one station acquired twice:
    the one in ``chosen`` is used, else the latest, and the others are
    recorded as alternatives.

    Returns
    -------
    list of CompositionPlan
        One per chain (composed) or lone station (with the reason), for
        every STIR and T1 group.
    """
    groups: dict[tuple, list[StackGeometry]] = {}
    for stack in stacks:
        if stack.role not in (SequenceRole.STIR, SequenceRole.T1):
            continue
        key = (stack.study_uid, stack.role, stack.orientation, _station_free(stack.description),
               _without_station(stack.variant))
        groups.setdefault(key, []).append(stack)
    plans = []
    for key, members in groups.items():
        if key[2] == "oblique":
            plans.append(_new_plan(key, stations=members[:1],
                                         ends=["oblique slices are not composed"]))
            continue
        members.sort(key=lambda s: -s.bounds()[1][2])  # top of the head first
        used, alternatives = _one_per_position(_station_positions(members), set(chosen))
        plans.extend(_chains(key, used, alternatives))
    return plans


def _new_plan(key: tuple, stations: list[StackGeometry], ends: list[str] | None = None) -> CompositionPlan:
    study_uid, role, orientation, protocol, variant = key
    return CompositionPlan(study_uid, role, orientation, protocol, variant, stations=stations, ends=ends or [])


def _station_positions(members: list[StackGeometry]) -> list[list[StackGeometry]]:
    """Group stacks that cover the same station position (repeats), head first."""
    positions: list[list[StackGeometry]] = []
    for stack in members:
        for position in positions:
            if any(_repeats(other, stack) for other in position):
                position.append(stack)
                break
        else:
            positions.append([stack])
    return positions


def _repeats(a: StackGeometry, b: StackGeometry) -> bool:
    (a_lo, a_hi), (b_lo, b_hi) = a.bounds(), b.bounds()
    overlap = min(a_hi[2], b_hi[2]) - max(a_lo[2], b_lo[2])
    height = min(a.height, b.height)
    return height > 0 and overlap > MAX_OVERLAP_FRACTION * height and _side_by_side(a, b) is None


def _one_per_position(positions: list[list[StackGeometry]], chosen: set[str]):
    used, alternatives = [], []
    for n, position in enumerate(positions, start=1):
        picked = [s for s in position if s.volume_id in chosen]
        station = picked[0] if picked else max(position, key=lambda s: (s.acquired, s.volume_id))
        used.append(station)
        if len(position) > 1:
            alternatives.append({
                "position": n, "used": station.volume_id,
                "why": "chosen by the reader" if picked else "the latest acquisition",
                "others": [s.volume_id for s in position if s is not station],
            })
    return used, alternatives


def _chains(key: tuple, used: list[StackGeometry], alternatives: list[dict]) -> list[CompositionPlan]:
    """Walk the used stations head to feet; a gap over 10 mm or a sideways shift ends a chain."""
    plans = [_new_plan(key, stations=[used[0]])]
    for upper, lower in zip(used, used[1:]):
        overlap = float(lower.bounds()[1][2] - upper.bounds()[0][2])
        why = _side_by_side(upper, lower)
        if why is None and overlap < -MAX_GAP_MM:
            why = f"{-overlap:.1f} mm apart (more than {MAX_GAP_MM:g} mm)"
        if why is None:
            plans[-1].stations.append(lower)
            plans[-1].joins.append({"upper": upper.volume_id, "lower": lower.volume_id,
                                    "overlap_mm": round(overlap, 2)})
            continue
        plans[-1].ends.append(f"not joined to the station below ({lower.volume_id}): {why}")
        plans.append(_new_plan(key, stations=[lower], ends=[f"not joined to the station above ({upper.volume_id}): {why}"]))
    if len(used) == 1:
        plans[0].ends.append("a single station")
    for plan in plans:
        ids = {s.volume_id for s in plan.stations}
        plan.alternatives = [a for a in alternatives if a["used"] in ids]
        if plan.composed:
            plan.empty_rows = _empty_rows(plan.stations)
    return plans


def _side_by_side(upper: StackGeometry, lower: StackGeometry) -> str | None:
    (u_lo, u_hi), (l_lo, l_hi) = upper.bounds(), lower.bounds()
    side = min(u_hi[0], l_hi[0]) - max(u_lo[0], l_lo[0])
    width = min(u_hi[0] - u_lo[0], l_hi[0] - l_lo[0])
    if width <= 0 or side >= MIN_SIDE_OVERLAP * width:
        return None
    return f"side by side (they share {max(side, 0):.0f} of {width:.0f} mm left-right)"


def _empty_rows(stations: list[StackGeometry]) -> int:
    """Rows of the composed grid along head-feet that no station covers."""
    grid, shape = composed_geometry([(s.affine, s.shape) for s in stations])
    direction = grid[:3, :3] / np.linalg.norm(grid[:3, :3], axis=0)
    index_axis = int(np.argmax(np.abs(direction[2, :])))
    inverse = np.linalg.inv(grid)
    covered = np.zeros(shape[2 - index_axis], dtype=bool)
    for station in stations:
        along = apply_affine(inverse, _corners(station.affine, station.shape))[:, index_axis]
        start = max(int(np.ceil(along.min() - _ON_GRID)), 0)
        covered[start:int(np.floor(along.max() + _ON_GRID)) + 1] = True
    return int((~covered).sum())


def _station_free(description: str) -> str:
    """A description with station markers and numbers removed."""
    text = re.sub(r"(station|stat|st|bed|level|lvl)[\s_-]*\d+", "", description.lower())
    return re.sub(r"[\d\s_-]+", " ", text).strip()


def _without_station(variant: str) -> str:
    """A stack's variant without the station number a series of several stations gives it."""
    return re.sub(r"(^|, )station \d+", "", variant).lstrip(", ")


def _corners(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    k, j, i = shape
    ijk = np.array([[a, b, c] for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)], float)
    return apply_affine(affine, ijk)


def compose(stations: Sequence[Volume], volume_id: str | None = None, preview=None,
            out: np.ndarray | None = None) -> Volume:
    """Compose station volumes into one volume on a common grid.

    Stations are read and blended one at a time: peak memory is the result
    plus about one station.

    Parameters
    ----------
    stations : list of Volume
        The stations of one chain, any order. Lazy volumes are read one at
        a time and released once blended.
    volume_id : str, optional
        Id of the result; by default :func:`composed_volume_id` of the members.
    preview : callable, optional
        Called once as ``preview(array, grid_affine)`` after the first station is
        added, with the result array being filled (that station's voxels are in it,
        overlap rows not yet blended, the rest zero), so that a viewer can show it
        before composition ends. The same array becomes the result.
    out : numpy.ndarray, optional
        The result array to fill: float32 zeros of the grid's shape (e.g. memory shared with
        another process); by default a new one.

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
    plans = [_plan(station, inverse, shape) for station in stations]
    weights = _feather_weights([p.box for p in plans], hf_axis)
    same_extent = len({tuple(p.box[:hf_axis] + p.box[hf_axis + 1:]) for p in plans}) == 1
    per_row = same_extent and all(p.translate for p in plans)
    if out is None:
        out = zeroed(shape)
    elif tuple(out.shape) != tuple(shape) or out.dtype != np.float32:
        raise ValueError(f"compose into {out.dtype} {tuple(out.shape)}: the grid is float32 {tuple(shape)}")
    total = np.zeros(shape[hf_axis] if per_row else shape, dtype=np.float32)
    for station, plan, w in zip(stations, plans, weights):
        data, coverage = _station_on_grid(station, plan, grid_affine)
        if coverage is not None and per_row:
            total = np.ascontiguousarray(np.broadcast_to(_column(total, hf_axis), shape), dtype=np.float32)
            per_row = False  # missing slices: weights vary per voxel from here on
        if per_row:
            _add_rows(out, total, plan.box, data, w, hf_axis)
        else:
            _add_voxels(out, total, plan.box, data, coverage, w, hf_axis)
        del data, coverage
        station.release()
        if preview is not None:
            preview(out, grid_affine)
            preview = None
    _normalise(out, total, hf_axis)
    members = [v.volume_id for v in stations]
    header = VolumeHeader(volume_id=volume_id or composed_volume_id(members), role=stations[0].role,
                          kind=VolumeKind.COMPOSED, members=tuple(members))
    return Volume(out, grid_affine, header=header)


def zeroed(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros in small pages, zeroed where and when it is first written.

    numpy asks the kernel for huge pages (2 MiB) for large arrays. A composed
    volume is written one station at a time, and a station's rows are a band in
    every slice of the array, so its first station touches huge pages across
    the whole array: the kernel zeroes (and may compact memory for) most of the
    150 MB before the first station can be shown (100-300 ms measured, against
    35-70 ms with small pages). An anonymous memory map gets small pages, zeroed
    by the kernel as they are first written, and the whole composition costs
    no more CPU time (bench/README.md, start-up).
    """
    nbytes = int(np.prod(shape)) * 4
    if nbytes == 0:
        return np.zeros(shape, dtype=np.float32)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32).reshape(shape)


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


@dataclass(frozen=True)
class _Placement:
    """Where a station lands on the grid, decided from geometry alone."""

    box: list[tuple[int, int]]  # (start, stop) per array axis (k, j, i)
    translate: bool  # same axes and spacing: a sub-voxel shift, done in numpy
    axes_map: np.ndarray
    fraction: np.ndarray  # index order (i, j, k)


def _plan(station: Volume, inverse: np.ndarray, shape) -> _Placement:
    corners = apply_affine(inverse, _corners(station.affine, station.shape))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    grid_size = np.array([shape[2], shape[1], shape[0]])
    axes_map = inverse[:3, :3] @ station.affine[:3, :3]
    translate = bool(np.allclose(np.abs(axes_map), np.eye(3), atol=1e-3))
    if translate:
        start = np.clip(np.ceil(lo - _ON_GRID).astype(int), 0, None)
        stop = np.minimum(np.floor(hi + _ON_GRID).astype(int) + 1, grid_size)
    else:
        start = np.clip(np.floor(lo).astype(int), 0, None)
        stop = np.minimum(np.ceil(hi).astype(int) + 1, grid_size)
    box = [(int(start[a]), int(stop[a])) for a in (2, 1, 0)]
    return _Placement(box, translate, axes_map, start - lo)


def _station_on_grid(station: Volume, plan: _Placement, grid_affine: np.ndarray):
    """A station's values on its box of the grid, and its coverage there.

    Coverage is ``None`` when the station fills the whole box with data. A
    grid voxel that draws on a missing slice of the station has coverage 0,
    so that missing data carries no weight in blending.
    """
    data = station.array  # a lazy station reads its pixels (and learns its missing slices) here
    valid = _valid_slices(station)
    if plan.translate:
        counts = np.array([plan.box[2][1] - plan.box[2][0], plan.box[1][1] - plan.box[1][0],
                           plan.box[0][1] - plan.box[0][0]])
        on_grid = _translate(_in_grid_order(data, plan.axes_map), plan.fraction, counts)
        if valid is None:
            return on_grid, None
        weight = _translate(_in_grid_order(valid[:, None, None], plan.axes_map), plan.fraction, counts)
        return on_grid, (weight > 1.0 - _ON_GRID).astype(np.float32)
    return _resample(station, grid_affine, plan.box, valid)


def _valid_slices(station: Volume) -> np.ndarray | None:
    """1 for each slice of the station that holds data, 0 for a missing one (``None``: all present).

    The missing slices are those found when the voxels were read
    (``load.missing_slices``: gaps and unreadable files), or else the
    header's gaps.
    """
    missing = station.load.missing_slices or station.header.gap_slices()
    if not len(missing):
        return None
    valid = np.ones(station.shape[0], dtype=np.float32)
    valid[[k for k in missing if 0 <= k < valid.size]] = 0.0
    return valid


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


def _resample(station: Volume, grid_affine: np.ndarray, box, valid: np.ndarray | None = None):
    """Linear resampling of a station onto a box of the grid (SimpleITK).

    Coverage is where the station (its valid slices only) reaches the grid voxel.
    """
    import SimpleITK as sitk

    origin = apply_affine(grid_affine, np.array([box[2][0], box[1][0], box[0][0]], float))
    spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
    reference = sitk.Image([box[2][1] - box[2][0], box[1][1] - box[1][0], box[0][1] - box[0][0]], sitk.sitkFloat32)
    reference.SetOrigin(origin.tolist())
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection((grid_affine[:3, :3] / spacing).flatten().tolist())
    outputs = []
    ones = np.ones(station.shape, np.float32)
    if valid is not None:
        ones *= valid[:, None, None]
    for array in (station.array, ones):
        image = _to_sitk(array, station.affine)
        result = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        outputs.append(sitk.GetArrayFromImage(result))
    data, coverage = outputs
    if valid is not None:  # strictly: a voxel touching a missing slice would be darkened
        return data, (coverage > 1.0 - _ON_GRID).astype(np.float32)
    return data, (coverage > 0.5).astype(np.float32)


def _to_sitk(array: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection((affine[:3, :3] / spacing).flatten().tolist())
    return image


def _feather_weights(boxes: list, axis: int) -> list[np.ndarray]:
    """Per station, weights along head-feet that rise over the largest overlap."""
    spans = [box[axis] for box in boxes]
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


def _column(w: np.ndarray, axis: int) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = w.size
    return w.reshape(shape)


def _add_rows(out, total, box, data, w, axis: int) -> None:
    """Add a station whose weights vary only along head-feet (the fast path).

    Rows with full weight are added as they are; only the ramp rows near the
    station's edges are multiplied.
    """
    region = out[tuple(slice(lo, hi) for lo, hi in box)]
    full = np.nonzero(w >= 1.0)[0]
    first, last = (int(full[0]), int(full[-1]) + 1) if full.size else (w.size, w.size)
    region[_along(axis, slice(first, last))] += data[_along(axis, slice(first, last))]
    for rows in (slice(0, first), slice(last, w.size)):
        region[_along(axis, rows)] += data[_along(axis, rows)] * _column(w[rows], axis)
    total[box[axis][0]:box[axis][1]] += w


def _add_voxels(out, total, box, data, coverage, w, axis: int) -> None:
    """Add a station with per-voxel weights (other extents, or resampled)."""
    region = tuple(slice(lo, hi) for lo, hi in box)
    local = _column(w, axis) if coverage is None else _column(w, axis) * coverage
    out[region] += data * local
    total[region] += local


def _normalise(out: np.ndarray, total: np.ndarray, axis: int) -> None:
    """Divide by the summed weights where they are not already 1."""
    if total.ndim == 1:
        rows = np.nonzero((total > 0) & (np.abs(total - 1.0) > 1e-6))[0]
        out[_along(axis, rows)] /= _column(total[rows], axis)
    else:
        np.divide(out, total, out=out, where=(total > 0) & (total != 1.0))

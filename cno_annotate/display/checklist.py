"""The bone-unit checklist: every unit of a read, its state, and where it lies in the patient.

The viewer draws the schematic front-view skeleton (``cno-skeleton``) with one
colour per unit state; a click on a unit moves the views to the LPS point that
:func:`unit_target` computes from the schematic's proportions fitted to the
body found in the volume. Nothing here knows of Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from cno_annotate.annotation.model import Read, UnitMark
from cno_annotate.annotation.skeleton import Shape, Skeleton, load_skeleton
from cno_annotate.annotation.taxonomy import Taxonomy
from cno_annotate.display.regions import body_extent
from cno_annotate.io.axes import ijk_shape
from cno_annotate.io.roles import SequenceRole
from cno_annotate.io.volume import Volume


class UnitState(StrEnum):
    """What the read says of a bone unit so far."""

    LESION = "lesion"
    NO_LESION = "no_lesion"
    NOT_ASSESSABLE = "not_assessable"
    NOT_REVIEWED = "not_reviewed"


#: The legend's wording of each state.
STATE_LABELS = {UnitState.LESION: "Lesion", UnitState.NO_LESION: "No lesion",
                UnitState.NOT_ASSESSABLE: "Not assessable", UnitState.NOT_REVIEWED: "Not reviewed"}


def unit_states(read: Read, taxonomy: Taxonomy) -> dict[str, UnitState]:
    """The state of every unit: a lesion placed in it, its mark, or not yet reviewed.

    A lesion without site, or a lateral site without side, is in no unit yet.
    """
    states = {unit: UnitState.NOT_REVIEWED for unit in taxonomy.unit_ids()}
    for unit, mark in read.unit_marks.items():
        if unit in states:
            states[unit] = UnitState(UnitMark(mark).value)
    for lesion in read.lesions:
        if lesion.site_id and lesion.site_id in taxonomy.sites:
            site = taxonomy.sites[lesion.site_id]
            if lesion.side or not site.lateral:
                states[taxonomy.unit_id(site.id, lesion.side)] = UnitState.LESION
    return states


def remaining_units(read: Read, taxonomy: Taxonomy) -> list[str]:
    """The units not yet reviewed (neither a lesion nor a mark), in taxonomy order."""
    return [u for u, s in unit_states(read, taxonomy).items() if s is UnitState.NOT_REVIEWED]


@dataclass(frozen=True)
class UnitShape:
    """One skeleton shape and the bone unit it belongs to."""

    unit_id: str
    shape: Shape


def unit_shapes(taxonomy: Taxonomy, skeleton: Skeleton | None = None) -> list[UnitShape]:
    """The skeleton's shapes of the taxonomy's sites, with their units, in drawing order."""
    skeleton = skeleton or load_skeleton()
    return [UnitShape(taxonomy.unit_id(s.site, s.side), s) for s in skeleton.shapes if s.site in taxonomy.sites]


def shape_bounds(shape: Shape) -> tuple[float, float, float, float]:
    """(x min, x max, z min, z max) of a shape on the schematic, mm."""
    if shape.kind == "capsule":
        half = shape.width / 2
        xs, zs = (shape.a[0], shape.b[0]), (shape.a[1], shape.b[1])
        return min(xs) - half, max(xs) + half, min(zs) - half, max(zs) + half
    if shape.kind == "circle":
        (x, z), r = shape.centre, shape.radius
        return x - r, x + r, z - r, z + r
    (x, z), (w, h) = shape.centre, shape.size
    return x - w / 2, x + w / 2, z - h / 2, z + h / 2


def shape_centre(shape: Shape) -> tuple[float, float]:
    """The schematic (x, z) at the middle of a shape."""
    x0, x1, z0, z1 = shape_bounds(shape)
    return (x0 + x1) / 2, (z0 + z1) / 2


def unit_centre(taxonomy: Taxonomy, unit_id: str, skeleton: Skeleton | None = None) -> tuple[float, float]:
    """The schematic (x, z) of a unit: the mean of its shapes' centres.

    Raises
    ------
    KeyError
        If no shape of the skeleton belongs to the unit.
    """
    centres = [shape_centre(u.shape) for u in unit_shapes(taxonomy, skeleton) if u.unit_id == unit_id]
    if not centres:
        raise KeyError(f"the skeleton has no shape for bone unit {unit_id}")
    return float(np.mean([c[0] for c in centres])), float(np.mean([c[1] for c in centres]))


#: The skin of the schematic child of each skeleton file: (vertex, soles) z, mm. The bones' own
#: extremes are not the body's ends: the scalp lies above the skull outline, and the front view
#: draws the toes below the heels, 20 mm under the soles.
SCHEMATIC_SKIN_MM = {"1.0.0": (662.0, -890.0)}


def schematic_height(taxonomy: Taxonomy, skeleton: Skeleton | None = None) -> tuple[float, float]:
    """(top, bottom) z of the schematic child: the skin of its vertex and soles, mm.

    For a skeleton file without a known skin, the extremes of its shapes.
    """
    skeleton = skeleton or load_skeleton()
    if skeleton.version in SCHEMATIC_SKIN_MM:
        return SCHEMATIC_SKIN_MM[skeleton.version]
    bounds = [shape_bounds(u.shape) for u in unit_shapes(taxonomy, skeleton)]
    return max(b[3] for b in bounds), min(b[2] for b in bounds)


#: How far inside the skin the body found on a fat-suppressed volume ends, at the vertex and at the soles (mm):
#: the subcutaneous fat is as dark as the air there. Measured on the sample generator's STIR beside its T1
#: (8 mm of fat; the STIR's body ended 3-7 mm below the vertex and 6-8 mm above the soles over seeds 0, 7, 13,
#: 21, 30 and 31 at 64-128 pixels, the T1's within 0-4 mm of both); a cervical body is 13 mm tall, so the
#: fit's 6 mm put a click near its upper endplate on the level above.
SUPPRESSED_FAT_MM = 6.0


def skin_extent_z(volume: Volume) -> tuple[float, float]:
    """LPS z (mm) of the top and bottom of the skin in a volume, the fat-suppressed fat under it included."""
    top, bottom = body_extent(volume, 2)
    if volume.role == SequenceRole.STIR:
        return top + SUPPRESSED_FAT_MM, bottom - SUPPRESSED_FAT_MM
    return top, bottom


def unit_target(volume: Volume, taxonomy: Taxonomy, unit_id: str, current_lps,
                skeleton: Skeleton | None = None) -> np.ndarray:
    """The LPS point (mm) of a bone unit in this patient's volume.

    The schematic is scaled so that its vertex and soles meet the top and
    bottom of the skin found in the volume (:func:`skin_extent_z`), and
    centred on the body's midline (right-left profile); the unit lands at the
    middle of its shapes. The anterior-posterior coordinate of ``current_lps``
    is kept (a coronal view stays on its slice) where the body is at the unit's
    place on that slice; where it is not (an arm in front of a posterior slice),
    the point goes to the middle of the body along anterior-posterior there, so
    the view shows the bone rather than air. The point is clamped into the
    volume's extent.
    """
    x_s, z_s = unit_centre(taxonomy, unit_id, skeleton)
    top_s, bottom_s = schematic_height(taxonomy, skeleton)
    top, bottom = skin_extent_z(volume)
    left, right = body_extent(volume, 0)
    scale = (top - bottom) / (top_s - bottom_s)
    point = np.array(current_lps, dtype=float)
    point[0] = (left + right) / 2 + x_s * scale
    point[2] = top - (top_s - z_s) * scale
    return _through_body(volume, _clamped(volume, point))


#: At most this many voxels are sampled to find the air's signal (the darkest fifth of the volume).
_AIR_SAMPLE = 1_000_000


def _through_body(volume: Volume, lps: np.ndarray) -> np.ndarray:
    """``lps``, or, when it lies in air, the middle of the nearest run of body along anterior-posterior there.

    Body is a 3 x 3 in-plane mean above the air (the darkest fifth of the volume's voxels, sampled)
    by six of the air's standard deviations.
    """
    array = volume.array
    direction = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    index_axis = int(np.argmax(np.abs(direction[1, :])))  # the ijk axis along anterior-posterior
    array_axis = 2 - index_axis
    position = np.clip(np.round(volume.lps_to_index(lps)).astype(int)[::-1], 0, np.array(array.shape) - 1)
    block = tuple(slice(None) if axis == array_axis else slice(max(0, int(c) - 1), int(c) + 2)
                  for axis, c in enumerate(position))
    others = tuple(axis for axis in range(3) if axis != array_axis)
    profile = np.asarray(array[block], dtype=np.float64).mean(axis=others)
    step = max(1, int(np.ceil((array.size / _AIR_SAMPLE) ** (1 / 3))))
    sample = np.asarray(array[::step, ::step, ::step], dtype=np.float64).ravel()
    air = sample[sample <= np.percentile(sample, 20)]
    body = np.flatnonzero(profile > air.mean() + 6 * air.std())
    here = int(position[array_axis])
    if body.size == 0 or here in body:
        return lps
    runs = np.split(body, np.flatnonzero(np.diff(body) > 1) + 1)
    nearest = min(runs, key=lambda run: min(abs(int(run[0]) - here), abs(int(run[-1]) - here)))
    middle = (float(nearest[0]) + float(nearest[-1])) / 2
    return lps + (middle - here) * volume.affine[:3, index_axis]


def _clamped(volume: Volume, lps: np.ndarray) -> np.ndarray:
    """The point moved into the volume's index box, if it lies outside."""
    ijk = volume.lps_to_index(lps)
    limits = np.array(ijk_shape(volume.shape), dtype=float) - 1
    return volume.index_to_lps(np.clip(ijk, 0, limits))


def _distance_to_shape(shape: Shape, x: float, z: float) -> float:
    """Distance (schematic mm) from a point to a shape; 0 inside it."""
    if shape.kind == "capsule":
        a, b = np.array(shape.a), np.array(shape.b)
        ab = b - a
        t = float(np.clip(np.dot(np.array([x, z]) - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
        return max(0.0, float(np.hypot(*(np.array([x, z]) - (a + t * ab)))) - shape.width / 2)
    if shape.kind == "circle":
        return max(0.0, float(np.hypot(x - shape.centre[0], z - shape.centre[1])) - shape.radius)
    x0, x1, z0, z1 = shape_bounds(shape)
    return float(np.hypot(max(x0 - x, 0.0, x - x1), max(z0 - z, 0.0, z - z1)))


#: A body found over at least this head-feet length (mm) is a whole body even when it runs off one end of
#: the volume (feet or vertex at the edge of a whole-body scan); a toddler is about 850 mm tall.
WHOLE_BODY_MM = 700.0


def shows_whole_body(volume: Volume) -> bool:
    """Whether a volume holds the whole body from vertex to soles, so the schematic can be fitted to it.

    The body found along head-feet (:func:`body_extent`) must end inside the volume at both ends,
    or run off at most one end over at least :data:`WHOLE_BODY_MM`. A station, or a series of the
    knees, whose body runs off the top and bottom (or is short) is not a whole body.
    """
    top, bottom = body_extent(volume, 2)
    far = np.array(ijk_shape(volume.shape), dtype=float) - 1
    ends = [float(volume.index_to_lps(np.array(corner) * far)[2]) for corner in np.ndindex(2, 2, 2)]
    direction = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    step = float(np.linalg.norm(volume.affine[:3, int(np.argmax(np.abs(direction[2, :])))]))
    cut_top, cut_bottom = top >= max(ends) - 1.5 * step, bottom <= min(ends) + 1.5 * step
    if not (cut_top or cut_bottom):
        return True
    return not (cut_top and cut_bottom) and top - bottom >= WHOLE_BODY_MM


def propose_site(volume: Volume, taxonomy: Taxonomy, lps, skeleton: Skeleton | None = None) -> tuple[str, str | None]:
    """The site (and side) whose schematic shape lies nearest to an LPS point, for the reader to confirm.

    The inverse of :func:`unit_target`: the point is placed on the schematic fitted to the
    body in the volume; of the shapes it falls in, the one drawn first wins (the skeleton file
    draws the axial skeleton and long bones before what lies over them: ribs, patellae);
    outside every shape, the nearest. The front view draws the sternum over the thoracic
    spine and the mandible over the upper cervical spine, so depth decides between them: a
    point behind the body's coronal midplane is never proposed the sternum or the mandible,
    one in front of it never a vertebra or the sacrum.
    """
    top_s, bottom_s = schematic_height(taxonomy, skeleton)
    top, bottom = skin_extent_z(volume)
    left, right = body_extent(volume, 0)
    back, front = body_extent(volume, 1)
    scale = (top - bottom) / (top_s - bottom_s)
    x = (float(lps[0]) - (left + right) / 2) / scale
    z = top_s - (top - float(lps[2])) / scale
    posterior = float(lps[1]) > (back + front) / 2
    shapes = [u.shape for u in unit_shapes(taxonomy, skeleton)]
    candidates = [n for n in range(len(shapes)) if _at_depth(taxonomy.sites[shapes[n].site], posterior)]
    best = min(candidates or range(len(shapes)), key=lambda n: (_distance_to_shape(shapes[n], x, z), n))
    return shapes[best].site, shapes[best].side


def _at_depth(site, posterior: bool) -> bool:
    """Whether a site can lie at a point behind (``posterior``) or in front of the coronal midplane."""
    if site.bone in ("sternum", "mandible"):
        return not posterior
    if site.region == "spine":
        return posterior
    return True

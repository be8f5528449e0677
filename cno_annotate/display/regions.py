"""Body regions along the head-feet axis, for "jump to region".

The body's top and bottom are found from the signal profile of the volume
along head-feet; regions sit at fixed fractions of the body height. The
fractions are approximate proportions of a standing child (vertex = 0,
soles = 1), good enough to land the view in the right region, not to label
anatomy.
"""

from __future__ import annotations

import numpy as np

from cno_annotate.io.volume import Volume

#: Region name -> fraction of the body height from the vertex.
REGION_FRACTIONS = {
    "Head": 0.06,
    "Neck": 0.13,
    "Shoulders / clavicles": 0.19,
    "Chest / thoracic spine": 0.27,
    "Elbows": 0.35,  # arms at the sides: the elbows beside the upper lumbar spine
    "Lumbar spine / abdomen": 0.38,
    "Wrists / hands": 0.48,  # and the wrists beside the hips (CNO strikes the distal radius too)
    "Pelvis / hips": 0.50,
    "Knees": 0.72,
    "Ankles": 0.93,
    "Feet": 0.97,
}


def body_extent_z(volume: Volume) -> tuple[float, float]:
    """LPS z (mm) of the top and bottom of the body in a volume.

    Rows along head-feet whose mean signal exceeds a fifth of the typical
    body row count as body; without such rows the volume's own extent is used.
    """
    return body_extent(volume, 2)


def body_extent(volume: Volume, lps_axis: int) -> tuple[float, float]:
    """LPS coordinate (mm) along ``lps_axis`` (0 x, 1 y, 2 z) of the body's two ends, larger first.

    The volume is projected to its brightest voxel across the slices and smoothed over 3 x 3
    voxels; a row along the axis is body when one of its voxels stands out from the air (the
    darkest fifth of the projection) by six of the air's standard deviations, in a run of at least
    :data:`MIN_BODY_ROWS` such rows (a lone row is a peak of noise). The fat-suppressed scalp of a
    STIR passes (a fifth of the mean row signal counted a STIR's whole field of view as body). The
    smoothing widens the body by one voxel at each end, which is taken back. Without body rows the
    volume's own extent is used.
    """
    direction = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    index_axis = int(np.argmax(np.abs(direction[lps_axis, :])))
    array_axis = 2 - index_axis
    across = 0 if array_axis != 0 else 1  # project across the slices (or across rows for the slice axis)
    projection = np.asarray(volume.array, dtype=np.float32).max(axis=across)
    row_axis = array_axis if array_axis < across else array_axis - 1
    profile = _smoothed(projection).max(axis=1 - row_axis)
    rows = np.arange(profile.size)
    body = _long_runs(rows[profile > _air_threshold(_smoothed(projection))])
    if body.size:
        shrink = 1 if body.max() - body.min() > 2 else 0
        body = np.array([body.min() + shrink, body.max() - shrink])
    else:
        body = rows
    ends = []
    for r in (body.min(), body.max()):
        ijk = np.zeros(3)
        ijk[index_axis] = r
        ends.append(float(volume.index_to_lps(ijk)[lps_axis]))
    return max(ends), min(ends)


#: Fewer rows than this in a run above the air are a peak of noise, not body (a row's brightest voxel of noise
#: can pass the threshold; a body part spans many rows).
MIN_BODY_ROWS = 3


def _long_runs(rows: np.ndarray) -> np.ndarray:
    """The rows (sorted indices) that lie in runs of at least :data:`MIN_BODY_ROWS` consecutive ones."""
    if rows.size == 0:
        return rows
    starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
    ends = np.append(starts[1:], rows.size)
    return np.concatenate([rows[a:b] for a, b in zip(starts, ends) if b - a >= MIN_BODY_ROWS] or [rows[:0]])


def _smoothed(image: np.ndarray) -> np.ndarray:
    """The mean of each pixel's 3 x 3 neighbourhood (edges repeated)."""
    padded = np.pad(image, 1, mode="edge")
    total = np.zeros(image.shape, dtype=np.float64)
    for i in range(3):
        for j in range(3):
            total += padded[i:i + image.shape[0], j:j + image.shape[1]]
    return total / 9.0


def _air_threshold(image: np.ndarray) -> float:
    """The signal above which a pixel is body: the darkest fifth's mean plus six of its standard deviations."""
    air = image[image <= np.percentile(image, 20)]
    return float(air.mean() + 6 * air.std())


def region_z(volume: Volume) -> dict[str, float]:
    """LPS z (mm) of each named body region in this volume."""
    top, bottom = body_extent_z(volume)
    return {name: top - f * (top - bottom) for name, f in REGION_FRACTIONS.items()}

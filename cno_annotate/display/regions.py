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

    Rows along the axis whose mean signal exceeds a fifth of the typical
    body row count as body; without such rows the volume's own extent is used.
    """
    direction = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    index_axis = int(np.argmax(np.abs(direction[lps_axis, :])))
    array_axis = 2 - index_axis
    other = tuple(a for a in range(3) if a != array_axis)
    key: list = [slice(None)] * 3
    key[other[0]] = slice(None, None, max(1, volume.shape[other[0]] // 16))  # a few slices suffice
    profile = np.asarray(volume.array[tuple(key)], dtype=np.float32).mean(axis=other)
    rows = np.arange(profile.size)
    body = rows[profile > 0.2 * np.median(profile[profile > 0])] if np.any(profile > 0) else rows
    if body.size == 0:
        body = rows
    ends = []
    for r in (body.min(), body.max()):
        ijk = np.zeros(3)
        ijk[index_axis] = r
        ends.append(float(volume.index_to_lps(ijk)[lps_axis]))
    return max(ends), min(ends)


def region_z(volume: Volume) -> dict[str, float]:
    """LPS z (mm) of each named body region in this volume."""
    top, bottom = body_extent_z(volume)
    return {name: top - f * (top - bottom) for name, f in REGION_FRACTIONS.items()}

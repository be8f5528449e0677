"""Voxel indices for hand-made lesions, as the editor derives them (position through the volume's affine)."""

from __future__ import annotations

import numpy as np

from cno_annotate.store import Store
from cno_annotate.volumes import open_volume


def voxel_at(store: Store, volume_id: str, position) -> tuple[float, float, float]:
    """The fractional voxel index ``(i, j, k)`` of an LPS position (mm) in a stored volume (pixels not read)."""
    i, j, k = open_volume(store, volume_id).lps_to_index(np.asarray(position, float))
    return float(i), float(j), float(k)

"""Patient-aligned planes of a volume, as radiologists look at them.

:func:`plane_mapping` tells, for a volume and a plane (axial, coronal,
sagittal), which array axis runs across the screen, which runs down, which
one is the slice axis, and which must be flipped so that the image follows
the radiological convention:

- axial: patient's right on the screen's left, anterior at the top;
- coronal: patient's right on the screen's left, head at the top;
- sagittal: anterior on the screen's left, head at the top.

Each array axis is matched to the patient axis it is most aligned with, so
axis-aligned acquisitions (all of WB-MRI in practice) are shown exactly,
with no interpolation: :func:`extract` returns a numpy view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cno_annotate.io.axes import PLANE_SCREEN, PLANES

_LETTERS = {(0, +1): "L", (0, -1): "R", (1, +1): "P", (1, -1): "A", (2, +1): "S", (2, -1): "I"}


@dataclass(frozen=True)
class PlaneMapping:
    """How one plane of one volume maps to the screen.

    Array axes are numbered as in the volume's array ``[k, j, i]``.
    """

    plane: str
    slice_axis: int
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    slices: int
    rows: int
    cols: int
    row_mm: float  # height of one screen row in mm
    col_mm: float  # width of one screen column in mm
    slice_mm: float
    letters: dict  # edge -> orientation letter: left, right, top, bottom

    @property
    def aspect(self) -> float:
        """Height / width of one displayed pixel."""
        return self.row_mm / self.col_mm


def axis_correspondence(affine: np.ndarray) -> dict[int, tuple[int, int]]:
    """For each LPS axis: (array axis, sign) of the volume axis closest to it."""
    direction = np.asarray(affine)[:3, :3]
    direction = direction / np.linalg.norm(direction, axis=0)
    out: dict[int, tuple[int, int]] = {}
    used: set[int] = set()
    # Greedy on the strongest alignments first, so each index axis is used once.
    pairs = sorted(((abs(direction[a, n]), a, n) for a in range(3) for n in range(3)), reverse=True)
    for _, lps_axis, index_axis in pairs:
        if lps_axis in out or index_axis in used:
            continue
        out[lps_axis] = (2 - index_axis, int(np.sign(direction[lps_axis, index_axis]) or 1))
        used.add(index_axis)
    return out


def plane_mapping(affine: np.ndarray, shape: tuple[int, int, int], plane: str) -> PlaneMapping:
    """The screen mapping of ``plane`` for a volume with this affine and shape.

    Raises
    ------
    ValueError
        For an unknown plane name.
    """
    if plane not in PLANE_SCREEN:
        raise ValueError(f"unknown plane {plane!r}; expected one of {', '.join(PLANES)}")
    (x_axis, x_sign), (y_axis, y_sign), normal = PLANE_SCREEN[plane]
    corr = axis_correspondence(affine)
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)  # by index axis i, j, k
    col_axis, col_sign = corr[x_axis]
    row_axis, row_sign = corr[y_axis]
    slice_axis, _ = corr[normal]
    return PlaneMapping(
        plane=plane,
        slice_axis=slice_axis,
        row_axis=row_axis,
        col_axis=col_axis,
        flip_rows=row_sign != y_sign,
        flip_cols=col_sign != x_sign,
        slices=int(shape[slice_axis]),
        rows=int(shape[row_axis]),
        cols=int(shape[col_axis]),
        row_mm=float(spacing[2 - row_axis]),
        col_mm=float(spacing[2 - col_axis]),
        slice_mm=float(spacing[2 - slice_axis]),
        letters={
            "left": _LETTERS[(x_axis, -x_sign)],
            "right": _LETTERS[(x_axis, x_sign)],
            "top": _LETTERS[(y_axis, -y_sign)],
            "bottom": _LETTERS[(y_axis, y_sign)],
        },
    )


def extract(array: np.ndarray, mapping: PlaneMapping, index: int) -> np.ndarray:
    """The 2-D slice ``index`` of a plane, rows down the screen (a view, no copy)."""
    image = _slice(array, mapping.slice_axis, index)
    remaining = [a for a in range(3) if a != mapping.slice_axis]
    if remaining.index(mapping.row_axis) == 1:
        image = image.T
    if mapping.flip_rows:
        image = image[::-1, :]
    if mapping.flip_cols:
        image = image[:, ::-1]
    return image


def _slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    key: list = [slice(None)] * 3
    key[axis] = index
    return array[tuple(key)]


def index_to_screen(mapping: PlaneMapping, ijk: np.ndarray) -> tuple[float, float, float]:
    """Continuous voxel index ``(i, j, k)`` -> (slice, row, column) on screen."""
    by_array_axis = {2 - n: float(ijk[n]) for n in range(3)}
    row = by_array_axis[mapping.row_axis]
    col = by_array_axis[mapping.col_axis]
    if mapping.flip_rows:
        row = mapping.rows - 1 - row
    if mapping.flip_cols:
        col = mapping.cols - 1 - col
    return by_array_axis[mapping.slice_axis], row, col


def screen_to_index(mapping: PlaneMapping, slice_index: float, row: float, col: float) -> np.ndarray:
    """(slice, row, column) on screen -> continuous voxel index ``(i, j, k)``."""
    if mapping.flip_rows:
        row = mapping.rows - 1 - row
    if mapping.flip_cols:
        col = mapping.cols - 1 - col
    by_array_axis = {mapping.slice_axis: slice_index, mapping.row_axis: row, mapping.col_axis: col}
    return np.array([by_array_axis[2], by_array_axis[1], by_array_axis[0]], dtype=float)

"""Axis conventions, written once: array index order, affine order, planes.

- A volume's array is indexed ``[k, j, i]`` (slice, row, column), so one slice
  is a contiguous 2-D image; ``Volume.shape`` is in that order.
- The affine takes ``(i, j, k, 1)`` to LPS millimetres ``(x, y, z, 1)``: voxel
  indices, spacings and the command line's ``shape`` / ``spacing_mm`` are in
  ``(i, j, k)`` = (column, row, slice) order. :func:`ijk_shape` turns an
  array shape into that order; array axis ``a`` is index axis ``2 - a``.
- LPS axes: 0 = x (towards the patient's left), 1 = y (posterior),
  2 = z (superior).
- Each plane (axial, coronal, sagittal) is shown with one LPS axis running
  right on the screen and one running down, and the third as its normal
  (:data:`PLANE_SCREEN`), in the radiological convention: axial with the
  patient's right on the screen's left and anterior at the top; coronal with
  the patient's right on the left and the head at the top; sagittal with
  anterior on the left and the head at the top.

This module imports nothing, so listings and documents can use it without numpy.
"""

from __future__ import annotations

#: The planes, in the order the viewer offers them.
PLANES: tuple[str, ...] = ("coronal", "axial", "sagittal")

#: For each plane: (LPS axis, sign) that runs right on the screen, (LPS axis, sign) that
#: runs down the screen, and the LPS axis of the plane's normal.
PLANE_SCREEN: dict[str, tuple[tuple[int, int], tuple[int, int], int]] = {
    "axial": ((0, +1), (1, +1), 2),
    "coronal": ((0, +1), (2, -1), 1),
    "sagittal": ((1, +1), (2, -1), 0),
}

#: For each plane: the LPS axis of the screen's columns, of its rows, and of the normal.
PLANE_AXES: dict[str, tuple[int, int, int]] = {
    plane: (right[0], down[0], normal) for plane, (right, down, normal) in PLANE_SCREEN.items()
}


def plane_normal(plane: str) -> int:
    """The LPS axis (0 x, 1 y, 2 z) normal to ``plane``.

    Raises
    ------
    KeyError
        For a name that is not a plane.
    """
    return PLANE_SCREEN[plane][2]


def plane_across(axis: int) -> str:
    """The plane whose normal is LPS ``axis``: 0 sagittal, 1 coronal, 2 axial."""
    return next(plane for plane, screen in PLANE_SCREEN.items() if screen[2] == axis)


def ijk_shape(array_shape) -> tuple[int, int, int]:
    """An array shape ``(k, j, i)`` as ``(i, j, k)``: columns, rows, slices."""
    k, j, i = (int(n) for n in array_shape)
    return i, j, k

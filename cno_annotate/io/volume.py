"""Image volumes in patient (LPS) coordinates.

A :class:`Volume` is a 3-D array plus an affine that maps voxel indices to
patient LPS millimetres, like nibabel's image model but in DICOM's LPS frame.
The array is indexed ``[k, j, i]`` (slice, row, column) so that a slice is a
contiguous 2-D image; the affine takes ``(i, j, k, 1)`` to ``(x, y, z, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from cno_annotate.io.roles import SequenceRole


class VolumeKind(StrEnum):
    """Where a stored volume comes from."""

    STACK = "stack"  #: one geometrically consistent stack of a DICOM series
    COMPOSED = "composed"  #: stations joined into one whole-body volume
    NIFTI = "nifti"  #: a NIfTI file


#: Orientation names, decided from the slice normal.
ORIENTATIONS = ("axial", "coronal", "sagittal", "oblique")

#: A normal whose largest component is below this is called oblique.
_OBLIQUE_COSINE = 0.8


@dataclass
class Volume:
    """A 3-D image in patient LPS coordinates.

    Parameters
    ----------
    array : numpy.ndarray
        Voxel values, shape ``(k, j, i)`` = (slices, rows, columns).
    affine : numpy.ndarray
        4 x 4 matrix mapping ``(i, j, k, 1)`` to LPS millimetres.
    volume_id : str
        The store's identifier: the SeriesInstanceUID for a plain DICOM
        series, a generated UID for composed or NIfTI volumes.
    role : SequenceRole or str
        ``SequenceRole.STIR``, ``SequenceRole.T1`` or ``SequenceRole.OTHER``.
    meta : dict
        Anything else worth keeping (description, stations, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    volume_id: str = ""
    role: str = SequenceRole.OTHER
    meta: dict = field(default_factory=dict)
    _inverse: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(k, j, i)``."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(i, j, k)``."""
        return spacing_from_affine(self.affine)

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` in ``(i, j, k)`` order to LPS mm."""
        return apply_affine(self.affine, ijk)

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        """Map LPS mm ``(..., 3)`` to fractional voxel indices ``(i, j, k)``."""
        return apply_affine(self.inverse_affine, lps)

    @property
    def inverse_affine(self) -> np.ndarray:
        """LPS mm -> voxel index; recomputed only when ``affine`` is replaced."""
        if self._inverse is None or self._inverse[0] is not self.affine:
            self._inverse = (self.affine, np.linalg.inv(self.affine))
        return self._inverse[1]


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4 x 4 affine to points of shape ``(..., 3)``."""
    points = np.asarray(points, dtype=float)
    return points @ affine[:3, :3].T + affine[:3, 3]


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each index axis: the column norms of the affine."""
    norms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def affine_from_dicom(
    orientation: np.ndarray,
    first_position: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_step: np.ndarray,
) -> np.ndarray:
    """Build the voxel -> LPS affine of a DICOM slice stack.

    Parameters
    ----------
    orientation : array of 6 floats
        ImageOrientationPatient: row direction cosines, then column ones.
    first_position : array of 3 floats
        ImagePositionPatient of the first slice (centre of its first voxel).
    pixel_spacing : (row spacing, column spacing)
        PixelSpacing in mm, DICOM order (between rows, between columns).
    slice_step : array of 3 floats
        Vector in mm from one slice's origin to the next.
    """
    orientation = np.asarray(orientation, dtype=float)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * pixel_spacing[1]
    affine[:3, 1] = orientation[3:] * pixel_spacing[0]
    affine[:3, 2] = np.asarray(slice_step, dtype=float)
    affine[:3, 3] = np.asarray(first_position, dtype=float)
    return affine


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal (row x column) of an ImageOrientationPatient."""
    orientation = np.asarray(orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def orientation_name(normal: np.ndarray) -> str:
    """Name the plane of a slice normal: axial, coronal, sagittal or oblique.

    The normal's largest LPS component decides (x: sagittal, y: coronal,
    z: axial) when its cosine is at least 0.8, otherwise ``"oblique"``.
    """
    normal = np.abs(np.asarray(normal, dtype=float))
    axis = int(np.argmax(normal))
    if normal[axis] < _OBLIQUE_COSINE * np.linalg.norm(normal):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def is_valid_orientation(orientation: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether six direction cosines form two orthonormal vectors."""
    orientation = np.asarray(orientation, dtype=float)
    if orientation.shape != (6,) or not np.all(np.isfinite(orientation)):
        return False
    row, col = orientation[:3], orientation[3:]
    return bool(
        abs(np.linalg.norm(row) - 1) < tol
        and abs(np.linalg.norm(col) - 1) < tol
        and abs(float(row @ col)) < tol
    )

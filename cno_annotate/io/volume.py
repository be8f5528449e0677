"""Image volumes in patient (LPS) coordinates.

A :class:`Volume` is a 3-D array plus an affine that maps voxel indices to
patient LPS millimetres, like nibabel's image model but in DICOM's LPS frame.
The array is indexed ``[k, j, i]`` (slice, row, column) so that a slice is a
contiguous 2-D image; the affine takes ``(i, j, k, 1)`` to ``(x, y, z, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from cno_annotate.io.axes import plane_across
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.io.roles import SequenceRole

#: Orientation names, decided from the slice normal.
ORIENTATIONS = ("axial", "coronal", "sagittal", "oblique")

#: A normal whose largest component is below this is called oblique.
_OBLIQUE_COSINE = 0.8


@dataclass(frozen=True)
class VolumeHeader:
    """What is known of a volume without reading its pixels.

    Parameters
    ----------
    volume_id : str
        The store's identifier: a stack's id (the SeriesInstanceUID when the
        series is one stack), or a generated UID for composed and NIfTI volumes.
    role : SequenceRole
        STIR, T1 or other.
    kind : VolumeKind or None
        Stack, composed or NIfTI (``None`` for a volume not from the store).
    study_uid, orientation, description : str or None
        As the store lists them.
    members : tuple of str
        A composed volume's station ids, head first.
    gaps : tuple of dict
        A stack's gaps in the series: ``{"after_slice": k, "missing": n}``.
    """

    volume_id: str = ""
    role: str = SequenceRole.OTHER
    kind: VolumeKind | None = None
    study_uid: str | None = None
    orientation: str | None = None
    description: str | None = None
    members: tuple[str, ...] = ()
    gaps: tuple[dict, ...] = ()

    def gap_slices(self) -> list[int]:
        """The slices that the gaps leave without data."""
        return [g["after_slice"] + 1 + n for g in self.gaps for n in range(g["missing"])]


@dataclass
class LoadReport:
    """What reading a volume's pixels found.

    Attributes
    ----------
    errors : list of dict
        Files that could not be decoded: ``{"path": ..., "reason": ...}``.
    missing_slices : list of int
        Slices without data (gaps in the series and unreadable files).
    cached : bool
        Whether the voxels came from the composed-volume cache.
    preview : bool
        Whether this is a composed volume still being built: its first station
        is in the array (on the final grid), the other stations not yet.
    """

    errors: list[dict] = field(default_factory=list)
    missing_slices: list[int] = field(default_factory=list)
    cached: bool = False
    preview: bool = False


class Volume:
    """A 3-D image in patient LPS coordinates: data, affine and header.

    As in nibabel's image model, shape and affine are known without reading
    pixels: a volume made with :meth:`lazy` reads its voxels on first access
    to :attr:`array` and can drop them again with :meth:`release`.

    Parameters
    ----------
    array : numpy.ndarray
        Voxel values, shape ``(k, j, i)`` = (slices, rows, columns).
    affine : numpy.ndarray
        4 x 4 matrix mapping ``(i, j, k, 1)`` to LPS millimetres.
    volume_id, role : str
        Shorthands for a header holding only these (ignored with ``header``).
    header : VolumeHeader, optional
        What is known of the volume besides its voxels.
    """

    def __init__(self, array: np.ndarray, affine: np.ndarray, volume_id: str = "",
                 role: str = SequenceRole.OTHER, *, header: VolumeHeader | None = None) -> None:
        self._array: np.ndarray | None = array
        self._loader: Callable[[Volume], np.ndarray] | None = None
        self._shape = tuple(int(n) for n in array.shape)
        self.affine = np.asarray(affine, dtype=float)
        self.header = header or VolumeHeader(volume_id=volume_id, role=role)
        self.load = LoadReport()
        self._inverse: tuple | None = None

    @classmethod
    def lazy(cls, loader: Callable[[Volume], np.ndarray], shape: tuple[int, int, int], affine: np.ndarray,
             header: VolumeHeader) -> Volume:
        """A volume whose voxels ``loader(volume)`` reads on first access (it may fill ``volume.load``)."""
        volume = cls(np.empty((0, 0, 0), dtype=np.float32), affine, header=header)
        volume._array, volume._loader, volume._shape = None, loader, tuple(int(n) for n in shape)
        return volume

    @property
    def array(self) -> np.ndarray:
        """The voxels, ``float32`` ``(k, j, i)``; a lazy volume reads them here."""
        if self._array is None:
            assert self._loader is not None
            array = self._loader(self)
            if tuple(array.shape) != self._shape:
                raise ValueError(f"volume {self.volume_id}: read {array.shape}, expected {self._shape}")
            self._array = array
        return self._array

    @property
    def in_memory(self) -> bool:
        """Whether the voxels are held (always, for a volume that is not lazy)."""
        return self._array is not None

    def release(self) -> None:
        """Drop the voxels of a lazy volume; the next access reads them again."""
        if self._loader is not None:
            self._array = None

    @property
    def volume_id(self) -> str:
        """The header's volume id."""
        return self.header.volume_id

    @property
    def role(self) -> str:
        """The header's sequence role."""
        return self.header.role

    def with_header(self, **changes) -> Volume:
        """This volume (same voxels) with header fields replaced."""
        self.header = replace(self.header, **changes)
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(k, j, i)``, known without reading the voxels."""
        return self._shape  # type: ignore[return-value]

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

    def __repr__(self) -> str:
        return (f"Volume({self.volume_id or '?'}, {self.role}, shape={self.shape}, "
                f"{'in memory' if self.in_memory else 'not read'})")


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
    return plane_across(axis)


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

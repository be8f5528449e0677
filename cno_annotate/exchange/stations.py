"""The station series that holds a lesion: its images, headers, grid and frame of reference.

A lesion is marked on any volume of its study, often a composed whole-body
volume, which is no DICOM series. SR and SEG refer to real series, so each
lesion is referred to the station series (a plain stack) that holds its
position: the lesion's own stack, or, for a composed volume, the member whose
grid holds the position farthest from its edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cno_annotate.errors import CnoError
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.io.roles import SequenceRole
from cno_annotate.io.series import Stack, build_stacks
from cno_annotate.paths import display
from cno_annotate.store.catalog import VolumeRow
from cno_annotate.store.db import Store


@dataclass
class Station:
    """One stack volume of the store with the headers of its images, in slice order."""

    row: VolumeRow
    stack: Stack

    @property
    def volume_id(self) -> str:
        """The store's id of the stack."""
        return self.row.volume_id

    @property
    def series_uid(self) -> str:
        """The DICOM SeriesInstanceUID."""
        return self.stack.series_uid

    @property
    def affine(self) -> np.ndarray:
        """Voxel ``(i, j, k, 1)`` to LPS mm."""
        return np.asarray(self.stack.affine, float)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return tuple(int(n) for n in self.stack.shape)  # type: ignore[return-value]

    def voxel_of(self, position) -> np.ndarray:
        """The (fractional) voxel index ``(i, j, k)`` of an LPS position."""
        return (np.linalg.inv(self.affine) @ np.append(np.asarray(position, float), 1.0))[:3]

    def margin(self, position) -> float:
        """How far (in voxels) a position lies inside the grid; negative outside."""
        ijk = self.voxel_of(position)
        k, j, i = self.shape
        upper = np.array([i - 1, j - 1, k - 1], float)
        return float(min(np.min(ijk + 0.5), np.min(upper + 0.5 - ijk)))

    @cached_property
    def headers(self) -> list[Dataset]:
        """The header of every image of the stack (no pixels), in slice order.

        Raises
        ------
        CnoError
            If a file is missing or unreadable.
        """
        out: list[Dataset] = []
        for image in self.stack.images:
            path = Path(image.path)
            try:
                out.append(pydicom.dcmread(path, stop_before_pixels=True))
            except (OSError, pydicom.errors.InvalidDicomError) as exc:
                raise CnoError(f"cannot read {display(str(path))} of series {self.series_uid}: {exc}") from None
        if any(h.get("NumberOfFrames", 1) not in (None, 1, "1") for h in out):
            raise CnoError(f"series {self.series_uid} is multi-frame; SR and SEG export need single-frame images")
        return out

    @property
    def frame_of_reference_uid(self) -> str:
        """The series' FrameOfReferenceUID.

        Raises
        ------
        CnoError
            If the images have none.
        """
        uid = self.headers[0].get("FrameOfReferenceUID")
        if not uid:
            raise CnoError(f"series {self.series_uid} has no FrameOfReferenceUID")
        return str(uid)

    def nearest_slice(self, position) -> int:
        """The slice (index into ``headers``) nearest to an LPS position."""
        k = float(self.voxel_of(position)[2])
        slices = np.asarray(self.stack.slice_index, float)
        return int(np.argmin(np.abs(slices - k)))


class Stations:
    """The stations of a store, read once each."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[str, Station] = {}

    def get(self, volume_id: str) -> Station:
        """The station of a stack volume.

        Raises
        ------
        CnoError
            If the volume is not a DICOM stack.
        """
        if volume_id not in self._cache:
            row = self.store.volume(volume_id)
            if row.kind != VolumeKind.STACK or row.series_uid is None:
                raise CnoError(f"volume {volume_id} is {row.kind}, not a DICOM series")
            stacks = [s for s in build_stacks(row.series_uid, self.store.images(row.series_uid))
                      if s.volume_id == row.volume_id]
            if not stacks:
                raise CnoError(f"volume {volume_id} has no images left in the store")
            self._cache[volume_id] = Station(row, stacks[0])
        return self._cache[volume_id]

    def holding(self, volume_id: str, position) -> Station:
        """The station series that holds a lesion marked at ``position`` on volume ``volume_id``.

        Raises
        ------
        CnoError
            If the volume is NIfTI or no station of a composed volume holds the position.
        """
        row = self.store.volume(volume_id)
        if row.kind == VolumeKind.STACK:
            return self.get(row.volume_id)
        if row.kind != VolumeKind.COMPOSED:
            raise CnoError(f"a lesion on {row.kind} volume {volume_id} has no DICOM series to refer to")
        return self._best([self.get(m) for m in row.members], position, volume_id)

    def in_study(self, study_uid: str, position, frame_of_reference_uid: str | None) -> Station:
        """The stack of a study (in the frame of reference, if given) that best holds a position.

        STIR stacks come first, as the reader marks lesions on STIR.
        """
        rows = [r for r in self.store.volumes(study_uid) if r.kind == VolumeKind.STACK and r.patient_geometry]
        stations = [self.get(r.volume_id) for r in sorted(rows, key=lambda r: (r.role != SequenceRole.STIR, r.volume_id))]
        if frame_of_reference_uid:
            stations = [s for s in stations if s.frame_of_reference_uid == frame_of_reference_uid]
        return self._best(stations, position, f"study {study_uid}")

    @staticmethod
    def _best(stations: list[Station], position, what: str) -> Station:
        if not stations:
            raise CnoError(f"{what}: no DICOM series to refer to")
        best = max(stations, key=lambda s: s.margin(position))
        if best.margin(position) < 0:
            raise CnoError(f"{what}: no series holds the position {tuple(round(float(v), 1) for v in position)}")
        return best

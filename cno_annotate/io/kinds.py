"""Kinds of stored volumes (kept free of numpy, so that listing commands stay light)."""

from __future__ import annotations

from enum import StrEnum


class VolumeKind(StrEnum):
    """Where a stored volume comes from."""

    STACK = "stack"  #: one geometrically consistent stack of a DICOM series
    COMPOSED = "composed"  #: stations joined into one whole-body volume
    NIFTI = "nifti"  #: a NIfTI file

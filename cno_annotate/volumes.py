"""Open any volume of the store as pixels: stacks, composed volumes, NIfTI.

Composed whole-body volumes are cached in the store's ``cache/`` folder as
``.npy`` files named by volume id and fingerprint (which changes when a
member's files change), so a second open is a memory map of one file; the
cache is size-limited (see :mod:`cno_annotate.cache`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cno_annotate.cache import VolumeCache
from cno_annotate.errors import CnoError
from cno_annotate.io import compose, nifti
from cno_annotate.io.dicom_index import SkipFile
from cno_annotate.io.pixels import load_stack
from cno_annotate.io.series import build_stacks, usable_images
from cno_annotate.io.volume import Volume, VolumeKind
from cno_annotate.paths import display, exists
from cno_annotate.store.db import Store


def load_volume(store: Store, volume_id: str, progress=None, use_cache: bool = True) -> Volume:
    """Read a volume's pixels.

    Parameters
    ----------
    store : Store
        The open store.
    volume_id : str
        A volume id from :meth:`Store.volumes` (unique prefixes accepted).
    progress : callable, optional
        ``progress(done, total)`` while slices are read.
    use_cache : bool
        Whether a cached composed volume may be used (and written).

    Returns
    -------
    Volume
        float32 voxels in LPS; ``meta`` carries the row from the store.

    Raises
    ------
    CnoError
        If the id is unknown or the files cannot be read at all.
    """
    row = store.volume(volume_id)
    if row["kind"] == VolumeKind.NIFTI:
        volume = _load_nifti(row)
    elif row["kind"] == VolumeKind.COMPOSED:
        volume = _load_composed(store, row, progress, use_cache)
    else:
        volume = _load_stack(store, row, progress)
    volume.volume_id = row["volume_id"]
    volume.role = row["role"]
    volume.meta.update({k: row[k] for k in ("kind", "study_uid", "orientation", "description", "members")})
    return volume


def _load_nifti(row: dict) -> Volume:
    try:
        return nifti.load_nifti(Path(row["source_path"]))
    except (SkipFile, OSError) as exc:
        raise CnoError(f"cannot read NIfTI {row['source_path']}: {exc}") from None


def _stack(store: Store, row: dict):
    images, _refused = usable_images(store.images(row["series_uid"]))  # reported at import
    stacks = [s for s in build_stacks(row["series_uid"], images) if s.volume_id == row["volume_id"]]
    if not stacks:
        raise CnoError(f"volume {row['volume_id']} has no images left in the store")
    return stacks[0]


def _load_stack(store: Store, row: dict, progress) -> Volume:
    stack = _stack(store, row)
    try:
        volume = load_stack(stack, progress)
    except ValueError as exc:  # a stack too large to hold
        raise CnoError(f"volume {row['volume_id']} cannot be loaded: {exc}") from None
    errors = volume.meta["load_errors"]
    if errors and len(errors) == len(stack.images):
        missing = sum(1 for image in stack.images if not exists(image["path"]))
        if missing:
            raise CnoError(f"{missing} files of this series are missing; if the folder moved, run: "
                           "cno-annotate relocate OLD NEW")
        raise CnoError(f"no slice of {row['volume_id']} could be read: {display(errors[0]['path'])}: "
                       f"{errors[0]['reason']}")
    volume.meta["missing_slices"] = _missing_slices(stack, errors)
    return volume


def _missing_slices(stack, errors: list[dict]) -> list[int]:
    """Slices of a stack without data: gaps in the series and slices that could not be read."""
    present = set(stack.slice_index)
    failed = {e["path"] for e in errors}
    unreadable = {k for image, k in zip(stack.images, stack.slice_index) if image["path"] in failed}
    return sorted((set(range(stack.shape[0])) - present) | unreadable)


def _load_composed(store: Store, row: dict, progress, use_cache: bool) -> Volume:
    cache = VolumeCache.of(store) if use_cache else None
    affine = np.array(row["affine"])
    if cache is not None:
        array = cache.get(row["volume_id"], row["fingerprint"], tuple(row["shape"]))
        if array is not None:
            return Volume(array=array, affine=affine, meta={"cached": True, "load_errors": []})
    members = [store.volume(m) for m in row["members"]]
    total = sum(m["shape"][0] for m in members)
    stations: list[_LazyStation] = []
    for member in members:
        offset = sum(m["shape"][0] for m in members[: len(stations)])
        stations.append(_LazyStation(store, member, _offset_progress(progress, offset, total)))
    volume = compose.compose(stations, volume_id=row["volume_id"])
    if cache is not None:
        cache.put(row["volume_id"], row["fingerprint"], volume.array)
    volume.meta.update({"cached": False, "load_errors": [e for s in stations for e in s.errors]})
    return volume


class _LazyStation:
    """A station stack that reads its pixels when composition asks for them."""

    def __init__(self, store: Store, row: dict, progress):
        self.store, self.row, self.progress = store, row, progress
        self.affine = np.array(row["affine"])
        k, j, i = (int(n) for n in row["shape"])
        self.shape = (k, j, i)
        self.volume_id = row["volume_id"]
        self.role = row["role"]
        self.errors: list[dict] = []
        #: Slices without data (gaps, unreadable files); known once the pixels are read.
        self.missing_slices: list[int] = []
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The station's voxels, read on first access."""
        if self._array is None:
            volume = _load_stack(self.store, self.row, self.progress)
            self.errors = volume.meta["load_errors"]
            self.missing_slices = volume.meta["missing_slices"]
            self._array = volume.array
        return self._array

    def release(self) -> None:
        """Drop the voxels once composition has used them."""
        self._array = None


def _offset_progress(progress, offset: int, total: int):
    if progress is None:
        return None
    return lambda done, _n: progress(offset + done, total)


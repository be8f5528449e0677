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
from cno_annotate.io.identity import NOT_FOUND, REPLACED, FileCheck, check_files
from cno_annotate.io.pixels import load_stack
from cno_annotate.io.roles import SequenceRole
from cno_annotate.io.series import build_stacks, usable_images
from cno_annotate.io.volume import LoadReport, Volume, VolumeHeader, VolumeKind
from cno_annotate.paths import display
from cno_annotate.store.catalog import VolumeRow
from cno_annotate.store.db import Store
from cno_annotate.wording import counted


def open_volume(store: Store, volume_id: str) -> Volume:
    """A volume of the store, its voxels not yet read.

    Shape, affine and header come from the store; the voxels are read on
    first access to ``array`` (and can be dropped with ``release()``).

    Parameters
    ----------
    store : Store
        The open store.
    volume_id : str
        A volume id from :meth:`Store.volumes` (unique prefixes accepted).

    Raises
    ------
    CnoError
        If the id is unknown.
    """
    return _lazy(store, store.volume(volume_id), progress=None, use_cache=True)


def volumes_by_series(store: Store) -> dict[str, list[Volume]]:
    """Every volume of the store, voxels not read, under its volume id and its DICOM series UID.

    What a lesion's ``series_uid`` may name (a series split into stacks names several volumes).
    """
    out: dict[str, list[Volume]] = {}
    for row in store.volumes():
        volume = _lazy(store, row, progress=None, use_cache=True)
        for key in {k for k in (row.volume_id, row.series_uid) if k}:
            out.setdefault(key, []).append(volume)
    return out


def load_volume(store: Store, volume_id: str, progress=None, use_cache: bool = True, preview=None,
                into: np.ndarray | None = None) -> Volume:
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
    preview : callable, optional
        ``preview(volume)`` with a first view of a composed volume being built: its
        final geometry and header, the first station's voxels, ``load.preview`` True.
        Its array is the one the result fills (a viewer shows it, then the result).
    into : numpy.ndarray, optional
        Zeros, float32, of the volume's shape: a composed volume built from its files is
        composed into it (e.g. memory shared with another process); otherwise unused.

    Returns
    -------
    Volume
        float32 voxels in LPS, read; ``header`` from the store, ``load``
        says what reading found.

    Raises
    ------
    CnoError
        If the id is unknown or the files cannot be read at all.
    """
    volume = _lazy(store, store.volume(volume_id), progress, use_cache, preview, into)
    volume.array  # noqa: B018 - read now
    return volume


def _lazy(store: Store, row: VolumeRow, progress, use_cache: bool, preview=None, into=None) -> Volume:
    header = _header(row)
    if row.kind == VolumeKind.NIFTI:
        return Volume.lazy(lambda volume: _read_nifti(row), _row_shape(row), np.array(row.affine), header)
    if row.kind == VolumeKind.COMPOSED:
        return Volume.lazy(lambda volume: _read_composed(store, row, volume, progress, use_cache, preview, into),
                           _row_shape(row), np.array(row.affine), header)
    return Volume.lazy(lambda volume: _read_stack(store, row, volume, progress), _row_shape(row),
                       np.array(row.affine), header)


def _header(row: VolumeRow) -> VolumeHeader:
    """What the store knows of a volume without reading its pixels."""
    return VolumeHeader(volume_id=row.volume_id, role=SequenceRole(row.role), kind=VolumeKind(row.kind),
                        study_uid=row.study_uid, orientation=row.orientation, description=row.description,
                        members=tuple(row.members))


def _row_shape(row: VolumeRow) -> tuple[int, int, int]:
    k, j, i = (int(n) for n in row.shape)
    return (k, j, i)


def _read_nifti(row: VolumeRow) -> np.ndarray:
    try:
        if row.source_path is None:
            raise OSError("no file recorded")
        return nifti.load_nifti(Path(row.source_path)).array
    except (SkipFile, OSError) as exc:
        raise CnoError(f"cannot read NIfTI {row.source_path}: {exc}") from None


def _stack(store: Store, row: VolumeRow):
    if row.series_uid is None:
        raise CnoError(f"volume {row.volume_id} is {row.kind}, not a DICOM series")
    images, _refused = usable_images(store.images(row.series_uid))  # reported at import
    stacks = [s for s in build_stacks(row.series_uid, images) if s.volume_id == row.volume_id]
    if not stacks:
        raise CnoError(f"volume {row.volume_id} has no images left in the store")
    return stacks[0]


def stack_instances(store: Store, row: VolumeRow) -> frozenset[tuple[str, int]]:
    """The (SOPInstanceUID, frame) of every image of a stack volume (what tells a stack apart, whatever its id)."""
    return frozenset((image.sop_uid, image.frame) for image in _stack(store, row).images)


def _read_stack(store: Store, row: VolumeRow, volume: Volume, progress) -> np.ndarray:
    stack = _stack(store, row)
    checks = check_files(stack.images, store.recorded_files(image.path for image in stack.images))
    unusable = {path: check.reason for path, check in checks.items() if not check.ok}
    if unusable and len(unusable) == len(checks):
        raise CnoError(_unusable_message(list(checks.values())))
    try:
        read = load_stack(stack, progress, unusable)
    except ValueError as exc:  # a stack too large to hold
        raise CnoError(f"volume {row.volume_id} cannot be loaded: {exc}") from None
    errors = read.load.errors
    if errors and len(errors) == len(stack.images):
        raise CnoError(f"no slice of {row.volume_id} could be read: {display(errors[0]['path'])}: "
                       f"{errors[0]['reason']}")
    volume.with_header(gaps=read.header.gaps)
    volume.load = LoadReport(errors=errors, missing_slices=_missing_slices(stack, errors))
    return read.array


def _unusable_message(checks: list[FileCheck], what: str = "this series") -> str:
    """Why no file of a series can be shown: missing (moved?) or holding other images, with counts."""
    missing = sum(check.missing for check in checks)
    replaced = len(checks) - missing
    parts = []
    if missing:
        parts.append(f"{counted(missing, 'file')} of {what} {'is' if missing == 1 else 'are'} missing; if the folder moved, run: "
                     "cno-annotate relocate OLD NEW")
    if replaced:
        parts.append(f"{counted(replaced, 'file')} of {what} {'holds' if replaced == 1 else 'hold'} other images than the ones imported (another "
                     "study's files in their place?): not shown; import their folder again to re-index it")
    return "; ".join(parts)


def unread_files_message(errors: list[dict]) -> str:
    """One line on the files a load could not use: how many, missing / holding other images / damaged."""
    files = {e["path"]: e["reason"] for e in errors}
    missing = sum(reason == NOT_FOUND for reason in files.values())
    replaced = sum(reason.startswith(REPLACED) for reason in files.values())
    damaged = [(path, reason) for path, reason in files.items()
               if reason != NOT_FOUND and not reason.startswith(REPLACED)]
    parts = [f"{missing} missing"] if missing else []
    if replaced:
        parts.append(f"{replaced} holding other images than the ones imported")
    if damaged:
        parts.append(f"{len(damaged)} unreadable (first: {display(damaged[0][0])}: {damaged[0][1]})")
    count, theirs = (f"{len(files)} files", "their slices have") if len(files) != 1 else ("1 file", "its slice has")
    return f"{count} of this volume could not be used ({', '.join(parts)}): {theirs} no data"


def _missing_slices(stack, errors: list[dict]) -> list[int]:
    """Slices of a stack without data: gaps in the series and slices that could not be read."""
    present = set(stack.slice_index)
    failed = {e["path"] for e in errors}
    unreadable = {k for image, k in zip(stack.images, stack.slice_index) if image.path in failed}
    return sorted((set(range(stack.shape[0])) - present) | unreadable)


def _read_composed(store: Store, row: VolumeRow, volume: Volume, progress, use_cache: bool, preview=None,
                   into: np.ndarray | None = None) -> np.ndarray:
    members = [store.volume(m) for m in row.members]
    checks = [_member_checks(store, member) for member in members]
    unusable = [check for member in checks for check in member if not check.ok]
    if any(member and all(not check.ok for check in member) for member in checks):
        raise CnoError(_unusable_message(unusable, "this whole-body volume"))
    cache = VolumeCache.of(store) if use_cache and not unusable else None
    if cache is not None:
        array = cache.get(row.volume_id, row.fingerprint, tuple(row.shape))
        if array is not None:
            volume.load = LoadReport(cached=True)
            return array
    total = sum(m.shape[0] for m in members)
    stations: list[Volume] = []
    for member in members:
        offset = sum(m.shape[0] for m in members[: len(stations)])
        stations.append(_lazy(store, member, _offset_progress(progress, offset, total), use_cache))
    first = None
    if preview is not None:
        def first(array: np.ndarray, grid_affine: np.ndarray) -> None:
            shown = Volume(array, grid_affine, header=volume.header)
            shown.load = LoadReport(preview=True)
            preview(shown)
    composed = compose.compose(stations, volume_id=row.volume_id, preview=first, out=into)
    errors = [e for s in stations for e in s.load.errors]
    if cache is not None and not errors:
        cache.put(row.volume_id, row.fingerprint, composed.array)
    volume.load = LoadReport(errors=errors)
    return composed.array


def _member_checks(store: Store, member: VolumeRow) -> list[FileCheck]:
    """The check of every file of a composed volume's member (a stack: the files of its series)."""
    images = store.images(member.series_uid) if member.series_uid else []
    return list(check_files(images, store.recorded_files(image.path for image in images)).values())


def _offset_progress(progress, offset: int, total: int):
    if progress is None:
        return None
    return lambda done, _n: progress(offset + done, total)

"""Open any volume of the store as pixels: stacks, composed volumes, NIfTI.

Composed whole-body volumes are cached in the store's ``cache/`` folder as
``.npy`` files named by volume id and fingerprint (which changes when a
member's files change), so a second open is a memory map of one file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from cno_annotate.errors import CnoError
from cno_annotate.io import compose, nifti
from cno_annotate.io.dicom_index import SkipFile
from cno_annotate.io.pixels import load_stack
from cno_annotate.io.series import build_stacks
from cno_annotate.io.volume import Volume
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
    if row["kind"] == "nifti":
        volume = _load_nifti(row)
    elif row["kind"] == "composed":
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
    stacks = [s for s in build_stacks(row["series_uid"], store.images(row["series_uid"]))
              if s.volume_id == row["volume_id"]]
    if not stacks:
        raise CnoError(f"volume {row['volume_id']} has no images left in the store")
    return stacks[0]


def _load_stack(store: Store, row: dict, progress) -> Volume:
    volume = load_stack(_stack(store, row), progress)
    errors = volume.meta["load_errors"]
    if errors and len(errors) == len(_stack(store, row).images):
        raise CnoError(f"no slice of {row['volume_id']} could be read: {errors[0]['path']}: {errors[0]['reason']}")
    return volume


def _load_composed(store: Store, row: dict, progress, use_cache: bool) -> Volume:
    cache = store.cache_dir / f"{row['volume_id']}-{row['fingerprint'][:16]}.npy"
    affine = np.array(row["affine"])
    if use_cache and cache.exists():
        try:
            array = np.load(cache, mmap_mode="r")
            if tuple(array.shape) == tuple(row["shape"]):
                return Volume(array=array, affine=affine, meta={"cached": True, "load_errors": []})
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    members = [store.volume(m) for m in row["members"]]
    stations = []
    errors: list[dict] = []
    total = sum(int(np.prod(m["shape"][:1])) for m in members)
    done = [0]

    def station_progress(n: int, _total: int) -> None:
        if progress is not None:
            progress(done[0] + n, total)

    for member in members:
        station = _load_stack(store, member, station_progress)
        done[0] += member["shape"][0]
        errors.extend(station.meta["load_errors"])
        stations.append(station)
    volume = compose.compose(stations, volume_id=row["volume_id"])
    if use_cache:
        _save_atomic(cache, volume.array)
    volume.meta.update({"cached": False, "load_errors": errors})
    return volume


def _save_atomic(path: Path, array: np.ndarray) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(handle, "wb") as fp:
            np.save(fp, array)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)  # the cache is optional

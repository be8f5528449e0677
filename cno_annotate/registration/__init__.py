"""Registration of two studies of one patient: piecewise rigid transforms per body region.

A child lies differently at each visit and the limbs move relative to the
trunk, so prior and current whole-body volumes are linked by one rigid (or
affine) transform per body region, computed with SimpleITK. Qt-free.

Published API
-------------
``PiecewiseTransform`` (frozen, valid once constructed)
    ``source_volume_id``, ``target_volume_id``; ``regions`` (names in priority
    order: ``left_arm``, ``right_arm``, ``left_leg``, ``right_leg``,
    ``pelvis``, ``head_neck``, ``trunk``); ``region(name)`` the
    :class:`RegionTransform` (``matrix`` 4 x 4 LPS mm, ``nudge_mm``);
    ``region_for(point)``; ``map_point(point_lps) -> MappedPoint`` with
    ``point`` (LPS mm in the other study) and ``region`` (name used);
    ``inverse()``; ``nudged(region, delta_mm)`` (a reader's correction, a
    translation in the target's mm kept beside the computed matrix;
    ``is_corrected``); ``to_dict()`` / ``from_dict()`` with
    ``schema_version`` ``"registration-1.0.0"``.
``transform_between(store, prior_volume_id, current_volume_id, *, compute=True, progress=None)``
    The prior -> current transform: from the cache when present, computed
    (and cached) otherwise, None when not cached and ``compute`` is False.
    Safe to call from a worker thread: it opens its own connection to the
    store (SQLite connections belong to the thread that made them).
    ``progress(done, total)`` is called after each region.
``register_piecewise(source, target, *, affine=False, progress=None, times=None)``
    The computation itself, on two loaded :class:`~cno_annotate.io.volume.Volume`.

The cache: derived data, in ``<store cache folder>/registration/`` as JSON
named by both volumes' ids and content fingerprints (a changed member file
gives a new name); the cached prior -> current transform also answers a
current -> prior request (its inverse). Deleting the folder loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cno_annotate.errors import CnoError
from cno_annotate.fileio import atomic_write_text
from cno_annotate.registration.regions import REGION_NAMES, RegionBox, body_regions
from cno_annotate.registration.register import RegistrationTimes, naive_rigid, register_piecewise
from cno_annotate.registration.transform import (
    SCHEMA_VERSION,
    BoxSpace,
    MappedPoint,
    PiecewiseTransform,
    RegionTransform,
)
from cno_annotate.store import reading_studies
from cno_annotate.store.catalog import VolumeRow
from cno_annotate.store.db import Store

__all__ = [
    "REGION_NAMES",
    "SCHEMA_VERSION",
    "BoxSpace",
    "MappedPoint",
    "PiecewiseTransform",
    "RegionBox",
    "RegionTransform",
    "RegistrationTimes",
    "body_regions",
    "cache_path",
    "naive_rigid",
    "register_piecewise",
    "transform_between",
]

CACHE_FOLDER = "registration"


def cache_path(store: Store, source: VolumeRow, target: VolumeRow) -> Path:
    """The cache file of the transform from one volume row to another."""
    def key(row: VolumeRow) -> str:
        return f"{row.volume_id}-{str(row.fingerprint)[:16]}"

    return store.cache_dir / CACHE_FOLDER / f"{key(source)}--{key(target)}.json"


def transform_between(
    store: Store,
    prior_volume_id: str,
    current_volume_id: str,
    *,
    compute: bool = True,
    progress: Callable[[int, int], None] | None = None,
    same_patient: bool = False,
) -> PiecewiseTransform | None:
    """The transform from a prior volume to a current one of the same patient.

    Parameters
    ----------
    store : Store
        The open store (only its folder is used: this function opens its own
        connection, so it may run in a worker thread).
    prior_volume_id, current_volume_id : str
        Volumes of the two studies (e.g. their composed STIR).
    compute : bool
        Compute it when it is not cached; if False, return None instead.
    progress : callable, optional
        ``progress(done, total)`` during the computation.
    same_patient : bool
        The caller knows both studies are one patient's visits (two cases of one patient code of a
        reading study whose images are in another store, an online reader's study PACS cache, where
        each copy's patient ID is its reading code); else the store's patient IDs decide.

    Returns
    -------
    PiecewiseTransform or None
        Prior (source) to current (target) LPS mm.

    Raises
    ------
    CnoError
        If a volume is unknown, the studies are of different patients, or the
        registration fails.
    """
    from cno_annotate.volumes import load_volume  # volumes imports io; keep import cheap

    own = Store.open(store.root, read_only=store.read_only, quick_check=False)
    try:
        prior, current = own.volume(prior_volume_id), own.volume(current_volume_id)
        if not same_patient:
            _refuse_other_patient(own, prior, current)
        cached = _cached(own, prior, current)
        if cached is not None or not compute:
            return cached
        transform = register_piecewise(load_volume(own, prior.volume_id),
                                       load_volume(own, current.volume_id), progress=progress)
        path = cache_path(own, prior, current)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(transform.to_dict(), indent=1) + "\n")
        except OSError:
            pass  # a cache that cannot be written costs a recomputation, nothing else
        return transform
    finally:
        own.close()


def _cached(store: Store, prior: VolumeRow, current: VolumeRow) -> PiecewiseTransform | None:
    forward = cache_path(store, prior, current)
    backward = cache_path(store, current, prior)
    for path, invert in ((forward, False), (backward, True)):
        try:
            transform = PiecewiseTransform.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, CnoError):
            continue  # absent or damaged: recompute
        return transform.inverse() if invert else transform
    return None


def _refuse_other_patient(store: Store, prior: VolumeRow, current: VolumeRow) -> None:
    patients = {s.study_uid: s.patient_id for s in store.studies(count_missing=False)}
    a, b = patients.get(prior.study_uid), patients.get(current.study_uid)
    if a is not None and b is not None and a != b and not reading_studies.one_patient(
            store.db, prior.study_uid, current.study_uid):
        raise CnoError("the two volumes belong to different patients: they are not registered")

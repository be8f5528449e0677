"""Derive a study's volumes from its images: stacks, roles, whole-body compositions.

:func:`rebuild_volumes` runs after every import and after every change a
reader makes to the derivation (a role override, a station choice). It
replaces a study's derived volumes and its composition notes: for each STIR
and T1 protocol, how it composed (stations, overlaps and gaps in mm, repeated
stations and the acquisition used) or why it did not.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cno_annotate.errors import CnoError
from cno_annotate.io import compose
from cno_annotate.io.roles import SeriesClass, recognise_series
from cno_annotate.io.series import Stack, build_stacks, usable_images
from cno_annotate.store import derived
from cno_annotate.store.catalog import VolumeRow
from cno_annotate.store.db import Store
from cno_annotate.store.instances import ImageRow
from cno_annotate.store.locations import damaged_files


def rebuild_volumes(store: Store, study_uids: list[str]) -> list[dict]:
    """Derive the stacks and composed volumes of studies from their images.

    Role overrides and station choices (kept in their own tables) survive a
    rebuild; composition uses the effective role, so overriding a station's
    role re-plans chains.

    Returns
    -------
    list of dict
        ``{"path", "reason"}`` for stored images (or series) that could not
        be made into a volume; the rest of the study is rebuilt regardless.
    """
    problems: list[dict] = []
    overrides = derived.role_overrides(store.db)
    chosen = derived.chosen_stations(store.db)
    damaged = damaged_files(store.db)  # their slices are gaps until a re-import finds the files whole
    for study_uid in study_uids:
        series_records = derived.study_series(store.db, study_uid)
        if not series_records:
            continue  # a NIfTI study: nothing to derive
        stacks: list[tuple[Stack, SeriesClass, str]] = []
        geometries = []
        for series in series_records:
            attributes = series.attributes
            description = attributes.get("SeriesDescription") or attributes.get("ProtocolName") or ""
            acquired = (str(attributes.get("SeriesTime") or ""), int(series.series_number or 0))
            images = [i for i in store.images(series.series_uid) if i.path not in damaged]
            for stack in _series_stacks(series.series_uid, images, problems):
                found = recognise_series(_stack_attributes(attributes, stack))
                stacks.append((stack, found, description))
                if stack.patient_geometry:
                    geometries.append(compose.StackGeometry(
                        stack.volume_id, study_uid, overrides.get(stack.volume_id, found.role), stack.orientation,
                        description, stack.affine, stack.shape, variant=stack.variant, acquired=acquired,
                        missing_slices=sum(g["missing"] for g in stack.gaps),
                    ))
        plans = compose.plan_compositions(geometries, chosen)
        notes = _station_notes(plans)
        volumes = [_stack_volume(study_uid, *item, notes.get(item[0].volume_id, {})) for item in stacks]
        volumes += [_composed_volume(study_uid, plan, volumes) for plan in plans if plan.composed]
        with store.transaction() as db:
            derived.replace_derived(db, study_uid, volumes, [
                derived.CompositionNote(study_uid, p.role, p.orientation, p.protocol, p.volume_id, p.message,
                                        p.detail()) for p in plans])
    return problems


def _series_stacks(series_uid: str, images: list[ImageRow], problems: list[dict]) -> list[Stack]:
    """A series' stacks; unusable rows and a series that forms no volume go to ``problems``."""
    usable, refused = usable_images(images)
    problems.extend(refused)
    if not usable:
        return []
    try:
        return build_stacks(series_uid, usable)
    except (ValueError, ArithmeticError, IndexError, np.linalg.LinAlgError) as exc:
        problems.append({"path": usable[0].path,
                         "reason": f"series {series_uid} forms no volume ({type(exc).__name__}: {exc})"})
        return []


def choose_station(store: Store, volume_id: str) -> derived.CompositionNote:
    """Use this stack at its station position instead of the other acquisitions there.

    Returns
    -------
    CompositionNote
        The composition note of the stack's protocol after the change.

    Raises
    ------
    CnoError
        If the stack is not one of several acquisitions of a station.
    """
    row = store.volume(volume_id)
    for note in store.compositions(row.study_uid):
        for alternative in note.detail["alternatives"]:
            position = [alternative["used"], *alternative["others"]]
            if row.volume_id in position:
                store.choose_station(row.study_uid, row.volume_id, position)
                rebuild_volumes(store, [row.study_uid])
                return _note_with(store, row)
    raise CnoError(f"{row.volume_id} is not a repeated station: there is no other acquisition to switch from "
                   "(see 'cno-annotate series')")


def reset_station(store: Store, volume_id: str) -> derived.CompositionNote:
    """Forget the reader's choice at this stack's station position: the latest acquisition is used."""
    row = store.volume(volume_id)
    for note in store.compositions(row.study_uid):
        for alternative in note.detail["alternatives"]:
            position = [alternative["used"], *alternative["others"]]
            if row.volume_id in position:
                store.choose_station(row.study_uid, None, position)
                rebuild_volumes(store, [row.study_uid])
                return _note_with(store, row)
    raise CnoError(f"{row.volume_id} is not a repeated station (see 'cno-annotate series')")


def _note_with(store: Store, row: VolumeRow) -> derived.CompositionNote:
    for note in store.compositions(row.study_uid):
        detail = note.detail
        ids = set(detail["stations"]) | {i for a in detail["alternatives"] for i in a["others"]}
        if row.volume_id in ids:
            return note
    raise CnoError(f"no composition note names {row.volume_id}")


def _station_notes(plans: list[compose.CompositionPlan]) -> dict[str, dict]:
    """For each stack in a plan: the composed volume it is part of (or an alternative to), and the note."""
    notes: dict[str, dict] = {}
    for plan in plans:
        for station in plan.stations:
            notes[station.volume_id] = {"composed": plan.volume_id, "message": plan.message}
        for alternative in plan.alternatives:
            for other in alternative["others"]:
                notes[other] = {"composed": None, "alternative_to": alternative["used"],
                                "in": plan.volume_id, "message": plan.message}
    return notes


def _stack_attributes(attributes: dict, stack: Stack) -> dict:
    """A series' attributes with the stack's own ImageType (FrameType): a Dixon series split into images."""
    image_type = (stack.images[0].split_values or {}).get("image_type") if stack.images else None
    if not image_type:
        return attributes
    keyword = "FrameType" if attributes.get("FrameType") else "ImageType"
    return {**attributes, keyword: str(image_type).split("\\")}


def _stack_volume(study_uid: str, stack: Stack, found: SeriesClass, description: str,
                  note: dict) -> derived.DerivedVolume:
    files = "\n".join(sorted(i.path + f"#{i.frame}" for i in stack.images))
    name = f"{description} ({stack.variant})".strip() if stack.variant else description
    return derived.DerivedVolume(
        volume_id=stack.volume_id, study_uid=study_uid, kind="stack", series_uid=stack.series_uid,
        auto_role=found.role, role_reason=found.reason, sequence=found.name, orientation=stack.orientation,
        shape=stack.shape, affine=stack.affine.tolist(),
        stations=1, members=[stack.volume_id], gaps=stack.gaps, duplicates=stack.duplicates, description=name,
        source_path=None, fingerprint=hashlib.sha1(files.encode("utf-8", "surrogateescape")).hexdigest(),
        patient_geometry=stack.patient_geometry, variant=stack.variant, composition=note,
    )


def _composed_volume(study_uid: str, plan: compose.CompositionPlan,
                     stacks: list[derived.DerivedVolume]) -> derived.DerivedVolume:
    chain = plan.stations
    assert plan.volume_id is not None, "a plan that composed names its volume"
    members = [g.volume_id for g in chain]
    affine, shape = compose.composed_geometry([(g.affine, g.shape) for g in chain])
    fingerprints = {s.volume_id: s.fingerprint for s in stacks}
    fingerprint = hashlib.sha1("".join(fingerprints[m] for m in members).encode()).hexdigest()
    gaps = [{"member": s.volume_id, **g} for s in stacks if s.volume_id in members for g in s.gaps]
    return derived.DerivedVolume(
        volume_id=plan.volume_id, study_uid=study_uid, kind="composed", series_uid=None, auto_role=chain[0].role,
        role_reason=f"composed from {len(members)} {chain[0].role} stations ({chain[0].orientation})",
        sequence=next((s.sequence for s in stacks if s.volume_id == members[0]), ""),
        orientation=chain[0].orientation, shape=shape, affine=affine.tolist(), stations=len(members),
        members=members, gaps=gaps, duplicates=0, description=chain[0].description, source_path=None,
        fingerprint=fingerprint, patient_geometry=True, variant=chain[0].variant, composition=plan.detail(),
    )

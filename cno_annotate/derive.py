"""Derive a study's volumes from its images: stacks, roles, whole-body compositions.

:func:`rebuild_volumes` runs after every import and after every change a
reader makes to the derivation (a role override, a station choice). It
replaces a study's derived volumes and its composition notes: for each STIR
and T1 protocol, how it composed (stations, overlaps and gaps in mm, repeated
stations and the acquisition used) or why it did not.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from cno_annotate.errors import CnoError
from cno_annotate.io import compose
from cno_annotate.io.roles import classify_sequence
from cno_annotate.io.series import Stack, build_stacks, usable_images
from cno_annotate.store.db import Store

_VOLUME_COLUMNS = 19


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
    overrides = {r[0]: r[1] for r in store.db.execute("SELECT volume_id, role FROM role_overrides")}
    chosen = {r[0] for r in store.db.execute("SELECT volume_id FROM station_choices")}
    for study_uid in study_uids:
        series_rows = store.db.execute(
            "SELECT series_uid, attributes, series_number FROM dicom_series WHERE study_uid = ?", (study_uid,)
        ).fetchall()
        if not series_rows:
            continue  # a NIfTI study: nothing to derive
        stacks: list[tuple[Stack, str, str, str]] = []
        geometries = []
        for series_uid, attributes_json, series_number in series_rows:
            attributes = json.loads(attributes_json)
            role, reason = classify_sequence(attributes)
            description = attributes.get("SeriesDescription") or attributes.get("ProtocolName") or ""
            acquired = (str(attributes.get("SeriesTime") or ""), int(series_number or 0))
            for stack in _series_stacks(series_uid, store.images(series_uid), problems):
                stacks.append((stack, role, reason, description))
                if stack.patient_geometry:
                    geometries.append(compose.StackGeometry(
                        stack.volume_id, study_uid, overrides.get(stack.volume_id, role), stack.orientation,
                        description, stack.affine, stack.shape, variant=stack.variant, acquired=acquired,
                        missing_slices=sum(g["missing"] for g in stack.gaps),
                    ))
        plans = compose.plan_compositions(geometries, chosen)
        notes = _station_notes(plans)
        rows = [_stack_row(study_uid, *item, notes.get(item[0].volume_id, {})) for item in stacks]
        rows += [_composed_row(study_uid, plan, rows) for plan in plans if plan.composed]
        with store.transaction() as db:
            db.execute("DELETE FROM volumes WHERE study_uid = ? AND kind != 'nifti'", (study_uid,))
            db.executemany(f"INSERT INTO volumes VALUES ({','.join('?' * _VOLUME_COLUMNS)})", rows)
            db.execute("DELETE FROM compositions WHERE study_uid = ?", (study_uid,))
            db.executemany(
                "INSERT INTO compositions VALUES (?,?,?,?,?,?,?)",
                [(study_uid, p.role, p.orientation, p.protocol, p.volume_id, p.message, json.dumps(p.detail()))
                 for p in plans],
            )
    return problems


def _series_stacks(series_uid: str, images: list[dict], problems: list[dict]) -> list[Stack]:
    """A series' stacks; unusable rows and a series that forms no volume go to ``problems``."""
    usable, refused = usable_images(images)
    problems.extend(refused)
    if not usable:
        return []
    try:
        return build_stacks(series_uid, usable)
    except (ValueError, ArithmeticError, IndexError, np.linalg.LinAlgError) as exc:
        problems.append({"path": usable[0]["path"],
                         "reason": f"series {series_uid} forms no volume ({type(exc).__name__}: {exc})"})
        return []


def choose_station(store: Store, volume_id: str) -> dict:
    """Use this stack at its station position instead of the other acquisitions there.

    Returns
    -------
    dict
        The composition note of the stack's protocol after the change.

    Raises
    ------
    CnoError
        If the stack is not one of several acquisitions of a station.
    """
    row = store.volume(volume_id)
    for note in store.compositions(row["study_uid"]):
        for alternative in note["detail"]["alternatives"]:
            position = [alternative["used"], *alternative["others"]]
            if row["volume_id"] in position:
                store.choose_station(row["study_uid"], row["volume_id"], position)
                rebuild_volumes(store, [row["study_uid"]])
                return _note_with(store, row)
    raise CnoError(f"{row['volume_id']} is not a repeated station: there is no other acquisition to switch from "
                   "(see 'cno-annotate series')")


def reset_station(store: Store, volume_id: str) -> dict:
    """Forget the reader's choice at this stack's station position: the latest acquisition is used."""
    row = store.volume(volume_id)
    for note in store.compositions(row["study_uid"]):
        for alternative in note["detail"]["alternatives"]:
            position = [alternative["used"], *alternative["others"]]
            if row["volume_id"] in position:
                store.choose_station(row["study_uid"], None, position)
                rebuild_volumes(store, [row["study_uid"]])
                return _note_with(store, row)
    raise CnoError(f"{row['volume_id']} is not a repeated station (see 'cno-annotate series')")


def _note_with(store: Store, row: dict) -> dict:
    for note in store.compositions(row["study_uid"]):
        detail = note["detail"]
        ids = set(detail["stations"]) | {i for a in detail["alternatives"] for i in a["others"]}
        if row["volume_id"] in ids:
            return note
    raise CnoError(f"no composition note names {row['volume_id']}")


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


def _stack_row(study_uid: str, stack: Stack, role: str, reason: str, description: str, note: dict) -> tuple:
    files = "\n".join(sorted(i["path"] + f"#{i['frame']}" for i in stack.images))
    name = f"{description} ({stack.variant})".strip() if stack.variant else description
    return (
        stack.volume_id, study_uid, "stack", stack.series_uid, role, reason, stack.orientation,
        json.dumps(stack.shape), json.dumps(stack.affine.tolist()), 1, json.dumps([stack.volume_id]),
        json.dumps(stack.gaps), stack.duplicates, name, None,
        hashlib.sha1(files.encode("utf-8", "surrogateescape")).hexdigest(), int(stack.patient_geometry),
        stack.variant, json.dumps(note),
    )


def _composed_row(study_uid: str, plan: compose.CompositionPlan, stack_rows: list[tuple]) -> tuple:
    chain = plan.stations
    members = [g.volume_id for g in chain]
    affine, shape = compose.composed_geometry([(g.affine, g.shape) for g in chain])
    fingerprints = {r[0]: r[15] for r in stack_rows}
    fingerprint = hashlib.sha1("".join(fingerprints[m] for m in members).encode()).hexdigest()
    gaps = [{"member": r[0], **g} for r in stack_rows if r[0] in members for g in json.loads(r[11])]
    return (
        plan.volume_id, study_uid, "composed", None, chain[0].role,
        f"composed from {len(members)} {chain[0].role} stations ({chain[0].orientation})",
        chain[0].orientation, json.dumps(shape), json.dumps(affine.tolist()), len(members),
        json.dumps(members), json.dumps(gaps), 0, chain[0].description, None, fingerprint, 1,
        chain[0].variant, json.dumps(plan.detail()),
    )

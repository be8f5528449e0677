"""Look-ups in the index of imported files: which patient a study is, which series an instance is in.

Each function takes the store's connection (SQLite or PostgreSQL; the SQL is
the one dialect :mod:`cno_annotate.store.postgres` translates) and returns
plain values or typed rows, never positional tuples.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cno_annotate.paths import from_text


@dataclass(frozen=True)
class StudyRow:
    """A study of the store: its DICOM identity, its patient (None for a NIfTI folder's study), counts.

    ``missing_files`` is how many of its files are not on disk (or unknown since they were replaced).
    """

    study_uid: str
    study_date: str | None
    description: str | None
    accession: str | None
    institution: str | None
    patient_id: str | None
    patient_name: str | None
    birth_date: str | None
    sex: str | None
    series: int
    volumes: int
    images: int
    missing_files: int


@dataclass(frozen=True)
class VolumeRow:
    """A volume of the store (a stack, a composed whole-body volume or a NIfTI file), as listed.

    ``role`` is the effective sequence role: the one a user set (``overridden``) or ``auto_role``,
    from the headers. Shape is ``(slices, rows, columns)``; the affine maps ``(i, j, k, 1)`` to LPS mm.
    ``source_path`` is a NIfTI volume's file as the file system spells it (None for DICOM volumes).
    """

    volume_id: str
    study_uid: str
    kind: str  # a VolumeKind value: 'stack', 'composed' or 'nifti'
    series_uid: str | None  # a stack's DICOM series
    auto_role: str
    role_reason: str
    sequence: str  # what a radiologist calls the series ("Dixon water"), "" when unknown
    orientation: str
    shape: list[int]
    affine: list[list[float]]
    stations: int
    members: list[str]  # a composed volume's stacks, head first
    gaps: list[dict[str, Any]]
    duplicates: int
    description: str
    source_path: str | None
    fingerprint: str
    patient_geometry: bool
    variant: str
    composition: dict[str, Any]
    role: str  # a SequenceRole value
    overridden: bool


@dataclass(frozen=True)
class StudyFile:
    """A file holding images of a study, with the series it belongs to."""

    path: str
    series_uid: str
    series_number: int | None


def studies(db: sqlite3.Connection, missing: Mapping[str, int]) -> list[StudyRow]:
    """Every study with its patient and counts, by date and UID; ``missing``: study UID -> files not on disk."""
    rows = db.execute(
        """
        SELECT s.study_uid, s.study_date, s.description, s.accession, s.institution,
               p.patient_id, p.patient_name, p.birth_date, p.sex,
               (SELECT COUNT(*) FROM dicom_series d WHERE d.study_uid = s.study_uid) AS series,
               (SELECT COUNT(*) FROM volumes v WHERE v.study_uid = s.study_uid) AS volumes,
               (SELECT COUNT(*) FROM images i JOIN dicom_series d USING (series_uid)
                WHERE d.study_uid = s.study_uid) AS images
        FROM studies s LEFT JOIN patients p USING (patient_key)
        ORDER BY s.study_date, s.study_uid
        """
    ).fetchall()
    return [StudyRow(r["study_uid"], r["study_date"], r["description"], r["accession"], r["institution"],
                     r["patient_id"], r["patient_name"], r["birth_date"], r["sex"], r["series"], r["volumes"],
                     r["images"], missing.get(r["study_uid"], 0)) for r in rows]


def volumes(db: sqlite3.Connection, where: str = "1", args: tuple = ()) -> list[VolumeRow]:
    """The volumes matching a condition on ``v`` (the volumes table), by study, kind and description."""
    rows = db.execute(
        f"""
        SELECT v.*, COALESCE(o.role, v.auto_role) AS role, o.role IS NOT NULL AS overridden
        FROM volumes v LEFT JOIN role_overrides o USING (volume_id)
        WHERE {where}
        ORDER BY v.study_uid, v.kind = 'composed', v.description, v.volume_id
        """, args)
    return [_volume(r) for r in rows]


def _volume(r: Any) -> VolumeRow:
    return VolumeRow(
        r["volume_id"], r["study_uid"], r["kind"], r["series_uid"], r["auto_role"], r["role_reason"], r["sequence"],
        r["orientation"],
        json.loads(r["shape"]), json.loads(r["affine"]), r["stations"], json.loads(r["members"]),
        json.loads(r["gaps"]), r["duplicates"], r["description"], from_text(r["source_path"]) if r["source_path"]
        else r["source_path"], r["fingerprint"], bool(r["patient_geometry"]), r["variant"],
        json.loads(r["composition"]), r["role"], bool(r["overridden"]))


def patient_keys(db: sqlite3.Connection) -> dict[str, int | None]:
    """Study UID -> the key of its patient record (None for a study without one)."""
    return {r["study_uid"]: r["patient_key"] for r in db.execute("SELECT study_uid, patient_key FROM studies")}


def series_of_instance(db: sqlite3.Connection, sop_uid: str) -> str | None:
    """The series UID of an imported instance (None when the store holds no such instance)."""
    row = db.execute("SELECT series_uid FROM images WHERE sop_uid = ?", (sop_uid,)).fetchone()
    return None if row is None else row["series_uid"]


def instances_of_study(db: sqlite3.Connection, study_uid: str) -> dict[str, set[str]]:
    """Series UID -> the SOP instance UIDs the store holds of a study (a multi-frame instance once)."""
    rows = db.execute("SELECT i.series_uid, i.sop_uid FROM images i JOIN dicom_series d USING (series_uid) "
                      "WHERE d.study_uid = ? AND i.frame = 0", (study_uid,))
    held: dict[str, set[str]] = {}
    for row in rows:
        held.setdefault(row["series_uid"], set()).add(row["sop_uid"])
    return held


def files_of_study(db: sqlite3.Connection, study_uid: str) -> list[StudyFile]:
    """The distinct image files of a study, by series number, series, instance number and path."""
    rows = db.execute(
        "SELECT i.path, d.series_uid, d.series_number FROM images i JOIN dicom_series d USING (series_uid) "
        "WHERE d.study_uid = ? GROUP BY i.path, d.series_uid, d.series_number "
        "ORDER BY d.series_number, d.series_uid, MIN(i.instance_number), i.path",
        (study_uid,)).fetchall()
    return [StudyFile(r["path"], r["series_uid"], r["series_number"]) for r in rows]


def any_image_path(db: sqlite3.Connection) -> str | None:
    """The recorded path of one image file (None for a store without images)."""
    row = db.execute("SELECT path FROM images LIMIT 1").fetchone()
    return None if row is None else row["path"]


def forget_import_log(db: sqlite3.Connection) -> None:
    """Delete the import runs and their skipped files (inside the caller's transaction)."""
    db.execute("DELETE FROM skipped")
    db.execute("DELETE FROM import_runs")

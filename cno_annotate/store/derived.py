"""The derived volumes of a study (stacks and composed volumes) and its composition notes.

:func:`cno_annotate.derive.rebuild_volumes` reads what it needs here (series
attributes, role overrides, station choices) and replaces a study's derived
rows in one write. Rows are typed: JSON columns are read and written as the
Python values they hold.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class SeriesRecord:
    """An imported DICOM series of a study: its UID, number and header attributes."""

    series_uid: str
    series_number: int | None
    attributes: dict[str, Any]


@dataclass(frozen=True)
class DerivedVolume:
    """A volume derived from a study's images (a row of ``volumes``): a stack or a composed volume.

    ``shape``, ``affine``, ``members``, ``gaps`` and ``composition`` are stored as JSON.
    """

    volume_id: str
    study_uid: str
    kind: str  # 'stack' or 'composed' (NIfTI volumes are imported, not derived)
    series_uid: str | None
    auto_role: str
    role_reason: str
    sequence: str  # what a radiologist calls the series ("Dixon water"), "" when the headers do not say
    orientation: str
    shape: Sequence[int]
    affine: list[list[float]]
    stations: int
    members: list[str]
    gaps: list[dict[str, Any]]
    duplicates: int
    description: str
    source_path: str | None
    fingerprint: str
    patient_geometry: bool
    variant: str
    composition: dict[str, Any]


@dataclass(frozen=True)
class CompositionNote:
    """How one protocol (role and orientation) of a study composed, or why not (a row of ``compositions``)."""

    study_uid: str
    role: str
    orientation: str
    protocol: str
    volume_id: str | None
    message: str
    detail: dict[str, Any]


_JSON_COLUMNS = {"shape", "affine", "members", "gaps", "composition"}
_VOLUME_COLUMNS = tuple(f.name for f in fields(DerivedVolume))


def compositions(db: sqlite3.Connection, study_uid: str | None = None) -> list[CompositionNote]:
    """The composition notes of one study (or all), by study, role, orientation, protocol and message."""
    where, args = ("WHERE study_uid = ?", (study_uid,)) if study_uid else ("", ())
    rows = db.execute("SELECT study_uid, role, orientation, protocol, volume_id, message, detail FROM compositions "
                      f"{where} ORDER BY study_uid, role, orientation, protocol, message", args)
    return [CompositionNote(r["study_uid"], r["role"], r["orientation"], r["protocol"], r["volume_id"], r["message"],
                            json.loads(r["detail"])) for r in rows]


def role_overrides(db: sqlite3.Connection) -> dict[str, str]:
    """Volume id -> the role a reader set for it."""
    return {r["volume_id"]: r["role"] for r in db.execute("SELECT volume_id, role FROM role_overrides")}


def chosen_stations(db: sqlite3.Connection) -> set[str]:
    """The stacks a reader chose at a repeated station position."""
    return {r["volume_id"] for r in db.execute("SELECT volume_id FROM station_choices")}


def study_series(db: sqlite3.Connection, study_uid: str) -> list[SeriesRecord]:
    """The DICOM series of a study (none for a NIfTI study)."""
    rows = db.execute("SELECT series_uid, attributes, series_number FROM dicom_series WHERE study_uid = ?",
                      (study_uid,)).fetchall()
    return [SeriesRecord(r["series_uid"], r["series_number"], json.loads(r["attributes"])) for r in rows]


def replace_derived(db: sqlite3.Connection, study_uid: str, volumes: list[DerivedVolume],
                    notes: list[CompositionNote]) -> None:
    """Replace a study's derived volumes and composition notes (inside the caller's transaction).

    The study's NIfTI volumes are kept.
    """
    db.execute("DELETE FROM volumes WHERE study_uid = ? AND kind != 'nifti'", (study_uid,))
    db.executemany(f"INSERT INTO volumes ({', '.join(_VOLUME_COLUMNS)}) VALUES ({','.join('?' * len(_VOLUME_COLUMNS))})",
                   [_volume_values(v) for v in volumes])
    db.execute("DELETE FROM compositions WHERE study_uid = ?", (study_uid,))
    db.executemany("INSERT INTO compositions (study_uid, role, orientation, protocol, volume_id, message, detail) "
                   "VALUES (?,?,?,?,?,?,?)",
                   [(n.study_uid, n.role, n.orientation, n.protocol, n.volume_id, n.message, json.dumps(n.detail))
                    for n in notes])


def _volume_values(volume: DerivedVolume) -> tuple:
    values = []
    for name in _VOLUME_COLUMNS:
        value = getattr(volume, name)
        if name in _JSON_COLUMNS:
            value = json.dumps(value)
        elif name == "patient_geometry":
            value = int(value)
        values.append(value)
    return tuple(values)

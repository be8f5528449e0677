"""Look-ups in the index of imported files: which patient a study is, which series an instance is in.

Each function takes the store's connection (SQLite or PostgreSQL; the SQL is
the one dialect :mod:`cno_annotate.store.postgres` translates) and returns
plain values or typed rows, never positional tuples.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyFile:
    """A file holding images of a study, with the series it belongs to."""

    path: str
    series_uid: str
    series_number: int | None


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

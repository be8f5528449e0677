"""The image index as the importer reads and writes it: instances, file states, import runs.

Every statement is written once, in SQLite's dialect; on a PostgreSQL store the
connection (:class:`cno_annotate.store.postgres.PgConnection`) rewrites the
placeholders and the ``INSERT OR IGNORE`` / ``OR REPLACE`` forms. Functions take
the open connection (``store.db``, or the one a transaction yields) and return
rows as frozen dataclasses; writes run in the caller's transaction. Paths are
kept in the text form of :func:`cno_annotate.paths.to_text` ("path text").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cno_annotate import paths


@dataclass(frozen=True, slots=True)
class KnownInstance:
    """An instance the store holds (its first frame), with the file it was recorded in."""

    sop_uid: str
    path: str  # path text
    series_uid: str
    study_uid: str


@dataclass(frozen=True, slots=True)
class FileState:
    """What an import made of one file: its size and modification time then, and the outcome."""

    path: str  # path text
    size: int
    mtime_ns: int
    kind: str  # "dicom", "nifti" or "skipped"
    ref: str | None  # the SOP instance UID (dicom) or the volume id (nifti)
    reason: str | None  # why it was skipped


@dataclass(frozen=True, slots=True)
class NiftiSource:
    """A volume imported from a NIfTI file, with the file it was recorded in."""

    volume_id: str
    path: str | None  # path text
    study_uid: str


@dataclass(frozen=True, slots=True)
class StudyOwner:
    """The patient a study belongs to (as the DICOM headers name them)."""

    study_uid: str
    patient_id: str
    patient_name: str
    birth_date: str


@dataclass(frozen=True, slots=True)
class SeriesStudy:
    """The study a DICOM series belongs to."""

    series_uid: str
    study_uid: str


@dataclass(frozen=True, slots=True)
class SeriesPlace:
    """A DICOM series with its study and patient, as the index records them."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_description: str
    accession: str
    institution: str
    series_uid: str
    modality: str
    series_number: int | None
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NiftiVolume:
    """A volume read from a NIfTI file, as recorded (geometry only: the pixels stay in the file)."""

    volume_id: str
    study_uid: str
    study_description: str  # of the study made for the file's folder, if it is new
    role: str
    role_reason: str
    orientation: str
    shape: tuple[int, ...]
    affine: list[list[float]]
    description: str
    path: str  # path text
    fingerprint: str  # SHA-1 of the file's content


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One 2-D image of the index (one frame of an instance), its geometry and pixel layout.

    ``path`` is the file's path as the file system spells it; the store keeps its text form.
    """

    sop_uid: str
    frame: int
    series_uid: str
    path: str
    transfer_syntax: str
    pixel_offset: int  # -1 when pixels must be decoded by pydicom
    frames: int
    dtype: str
    photometric: str
    bits_stored: int
    rows: int
    columns: int
    position: tuple[float, ...]  # (x, y, z) of the first pixel, LPS mm
    orientation: tuple[float, ...]  # row and column direction cosines (6)
    pixel_spacing: tuple[float, float]  # between rows, between columns (mm)
    slice_thickness: float | None
    rescale: tuple[float, float]  # slope, intercept
    echo_time: float | None
    instance_number: int | None
    geometry_known: bool
    split_values: dict[str, Any]


_IMAGE_COLUMNS = ("sop_uid, frame, series_uid, path, transfer_syntax, pixel_offset, frames, dtype, photometric, "
                  "bits_stored, rows, columns, position, orientation, pixel_spacing, slice_thickness, rescale, "
                  "echo_time, instance_number, geometry_known, split_values")


# -- reads ------------------------------------------------------------------------------------------
def known_instances(db: sqlite3.Connection) -> list[KnownInstance]:
    """Every instance of the store (first frames), with its recorded file, series and study."""
    return [KnownInstance(r["sop_uid"], r["path"], r["series_uid"], r["study_uid"]) for r in db.execute(
        "SELECT i.sop_uid, i.path, i.series_uid, d.study_uid FROM images i "
        "JOIN dicom_series d USING (series_uid) WHERE i.frame = 0")]


def file_states(db: sqlite3.Connection) -> list[FileState]:
    """What earlier imports made of each file they met."""
    return [FileState(r["path"], r["size"], r["mtime_ns"], r["kind"], r["ref"], r["reason"])
            for r in db.execute("SELECT path, size, mtime_ns, kind, ref, reason FROM files")]


def nifti_sources(db: sqlite3.Connection) -> list[NiftiSource]:
    """Every volume imported from a NIfTI file."""
    return [NiftiSource(r["volume_id"], r["source_path"], r["study_uid"]) for r in db.execute(
        "SELECT volume_id, source_path, study_uid FROM volumes WHERE kind = 'nifti'")]


def nifti_source(db: sqlite3.Connection, volume_id: str) -> NiftiSource | None:
    """A volume's recorded file (path text) and study (None: no such volume)."""
    row = db.execute("SELECT source_path, study_uid FROM volumes WHERE volume_id = ?", (volume_id,)).fetchone()
    return None if row is None else NiftiSource(volume_id, row["source_path"], row["study_uid"])


def series_images(db: sqlite3.Connection, series_uid: str) -> list[ImageRow]:
    """The images of a DICOM series (every frame of its instances), geometry decoded, paths as the OS spells them."""
    rows = db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE series_uid = ?", (series_uid,))
    return [ImageRow(
        r["sop_uid"], r["frame"], r["series_uid"], paths.from_text(r["path"]), r["transfer_syntax"], r["pixel_offset"],
        r["frames"], r["dtype"], r["photometric"], r["bits_stored"], r["rows"], r["columns"],
        tuple(json.loads(r["position"])), tuple(json.loads(r["orientation"])), tuple(json.loads(r["pixel_spacing"])),
        r["slice_thickness"], tuple(json.loads(r["rescale"])), r["echo_time"], r["instance_number"],
        bool(r["geometry_known"]), json.loads(r["split_values"])) for r in rows]


def study_owners(db: sqlite3.Connection) -> list[StudyOwner]:
    """The patient of every study that has one (NIfTI studies have none)."""
    return [StudyOwner(r["study_uid"], r["patient_id"], r["patient_name"], r["birth_date"]) for r in db.execute(
        "SELECT s.study_uid, p.patient_id, p.patient_name, p.birth_date "
        "FROM studies s JOIN patients p USING (patient_key)")]


def series_studies(db: sqlite3.Connection) -> list[SeriesStudy]:
    """The study of every DICOM series."""
    return [SeriesStudy(r["series_uid"], r["study_uid"])
            for r in db.execute("SELECT series_uid, study_uid FROM dicom_series")]


# -- writes (in the caller's transaction) ------------------------------------------------------------
def start_import_run(db: sqlite3.Connection, started: str, roots: list[str]) -> int:
    """Record the start of an import of ``roots`` (as shown to the user); the run's id."""
    cursor = db.execute("INSERT INTO import_runs (started, paths) VALUES (?, ?)", (started, json.dumps(roots)))
    return int(cursor.lastrowid or 0)


def finish_import_run(db: sqlite3.Connection, run_id: int, finished: str, summary: dict[str, Any],
                      skipped: Iterable[tuple[str, str]]) -> None:
    """Record the end of an import run: its summary, and every (path, reason) it skipped."""
    db.executemany("INSERT INTO skipped (run_id, path, reason) VALUES (?, ?, ?)",
                   [(run_id, path, reason) for path, reason in skipped])
    db.execute("UPDATE import_runs SET finished = ?, summary = ? WHERE run_id = ?",
               (finished, json.dumps(summary), run_id))


def record_file_states(db: sqlite3.Connection, states: Sequence[FileState]) -> None:
    """Remember what this import made of each file (replacing what an earlier one recorded of it)."""
    db.executemany("INSERT OR REPLACE INTO files (path, size, mtime_ns, kind, ref, reason) VALUES (?,?,?,?,?,?)",
                   [(s.path, s.size, s.mtime_ns, s.kind, s.ref, s.reason) for s in states])


def add_series(db: sqlite3.Connection, place: SeriesPlace) -> None:
    """Add a series, and its study and patient, unless the store holds them already."""
    db.execute("INSERT OR IGNORE INTO patients (patient_id, patient_name, birth_date, sex) VALUES (?,?,?,?)",
               (place.patient_id, place.patient_name, place.birth_date, place.sex))
    key = db.execute("SELECT patient_key FROM patients WHERE patient_id = ? AND patient_name = ? AND birth_date = ?",
                     (place.patient_id, place.patient_name, place.birth_date)).fetchone()["patient_key"]
    db.execute("INSERT OR IGNORE INTO studies (study_uid, patient_key, study_date, description, accession, "
               "institution) VALUES (?,?,?,?,?,?)",
               (place.study_uid, key, place.study_date, place.study_description, place.accession, place.institution))
    db.execute("INSERT OR IGNORE INTO dicom_series (series_uid, study_uid, modality, series_number, attributes) "
               "VALUES (?,?,?,?,?)",
               (place.series_uid, place.study_uid, place.modality, place.series_number, json.dumps(place.attributes)))


def add_images(db: sqlite3.Connection, images: Iterable[ImageRow]) -> None:
    """Add images (frames of instances) the store does not hold yet; their series must be added first."""
    db.executemany(
        f"INSERT OR IGNORE INTO images ({_IMAGE_COLUMNS}) VALUES ({','.join('?' * 21)})",
        [
            (
                r.sop_uid, r.frame, r.series_uid, paths.to_text(r.path), r.transfer_syntax, r.pixel_offset,
                r.frames, r.dtype, r.photometric, r.bits_stored, r.rows, r.columns, json.dumps(r.position),
                json.dumps(r.orientation), json.dumps(r.pixel_spacing), r.slice_thickness, json.dumps(r.rescale),
                r.echo_time, r.instance_number, int(r.geometry_known), json.dumps(r.split_values),
            )
            for r in images
        ],
    )


def add_nifti_volume(db: sqlite3.Connection, volume: NiftiVolume) -> None:
    """Record a volume read from a NIfTI file in its folder's study (made if new); replaces an earlier record."""
    db.execute("INSERT OR IGNORE INTO studies (study_uid, patient_key, study_date, description, accession, "
               "institution) VALUES (?, NULL, '', ?, '', '')", (volume.study_uid, volume.study_description))
    db.execute(
        "INSERT OR REPLACE INTO volumes (volume_id, study_uid, kind, series_uid, auto_role, role_reason, orientation, "
        "shape, affine, stations, members, gaps, duplicates, description, source_path, fingerprint, "
        "patient_geometry, variant, composition) VALUES (?,?,'nifti',NULL,?,?,?,?,?,1,'[]','[]',0,?,?,?,1,'','{}')",
        (volume.volume_id, volume.study_uid, volume.role, volume.role_reason, volume.orientation,
         json.dumps(list(volume.shape)), json.dumps(volume.affine), volume.description, volume.path,
         volume.fingerprint),
    )

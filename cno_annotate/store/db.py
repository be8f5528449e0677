"""The study store: an embedded SQLite database plus a cache folder.

The database holds what was imported (patients, studies, series, images with
their geometry and pixel layout), the volumes derived from them (slice
stacks, composed whole-body volumes, NIfTI files), role overrides and the
import log. Pixels stay in the original files and are read on demand;
composed volumes are cached under ``cache/``.

The schema version lives in ``PRAGMA user_version``; :data:`MIGRATIONS` holds
one step per version and :meth:`Store.open` applies the missing steps in
order, each in its own transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cno_annotate.errors import CnoError
from cno_annotate.paths import from_text
from cno_annotate.store.locations import missing_files, relocate, resolve_relative_paths
from cno_annotate.store.sqlite import Step, migrate, transaction

STORE_ENV = "CNO_ANNOTATE_STORE"
DB_NAME = "store.sqlite"


def _absolute_paths(connection: sqlite3.Connection) -> None:
    """5: the file-state table (re-import skips unchanged files), and absolute image paths."""
    connection.execute(
        """
        CREATE TABLE files (
            path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('dicom', 'nifti', 'skipped')),
            ref TEXT, reason TEXT
        )
        """
    )
    resolve_relative_paths(connection)


MIGRATIONS: list[Step] = [
    # 1: imported DICOM/NIfTI, derived volumes, role overrides, import log.
    """
    CREATE TABLE patients (
        patient_key INTEGER PRIMARY KEY,
        patient_id TEXT NOT NULL, patient_name TEXT NOT NULL,
        birth_date TEXT NOT NULL, sex TEXT NOT NULL,
        UNIQUE (patient_id, patient_name, birth_date)
    );
    CREATE TABLE studies (
        study_uid TEXT PRIMARY KEY,
        patient_key INTEGER REFERENCES patients (patient_key),
        study_date TEXT, description TEXT, accession TEXT, institution TEXT
    );
    CREATE TABLE dicom_series (
        series_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL REFERENCES studies (study_uid),
        modality TEXT, series_number INTEGER, attributes TEXT NOT NULL
    );
    CREATE TABLE images (
        sop_uid TEXT NOT NULL, frame INTEGER NOT NULL,
        series_uid TEXT NOT NULL REFERENCES dicom_series (series_uid),
        path TEXT NOT NULL, transfer_syntax TEXT NOT NULL,
        pixel_offset INTEGER NOT NULL, frames INTEGER NOT NULL, dtype TEXT NOT NULL,
        photometric TEXT NOT NULL, bits_stored INTEGER NOT NULL,
        rows INTEGER NOT NULL, columns INTEGER NOT NULL,
        position TEXT NOT NULL, orientation TEXT NOT NULL, pixel_spacing TEXT NOT NULL,
        slice_thickness REAL, rescale TEXT NOT NULL, echo_time REAL, instance_number INTEGER,
        geometry_known INTEGER NOT NULL,
        PRIMARY KEY (sop_uid, frame)
    );
    CREATE INDEX images_by_series ON images (series_uid);
    CREATE INDEX images_by_path ON images (path);
    CREATE TABLE volumes (
        volume_id TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('stack', 'composed', 'nifti')),
        series_uid TEXT, auto_role TEXT NOT NULL, role_reason TEXT NOT NULL,
        orientation TEXT NOT NULL, shape TEXT NOT NULL, affine TEXT NOT NULL,
        stations INTEGER NOT NULL, members TEXT NOT NULL, gaps TEXT NOT NULL,
        duplicates INTEGER NOT NULL, description TEXT NOT NULL,
        source_path TEXT, fingerprint TEXT NOT NULL, patient_geometry INTEGER NOT NULL
    );
    CREATE INDEX volumes_by_study ON volumes (study_uid);
    CREATE TABLE role_overrides (
        volume_id TEXT PRIMARY KEY, role TEXT NOT NULL, set_at TEXT NOT NULL
    );
    CREATE TABLE import_runs (
        run_id INTEGER PRIMARY KEY, started TEXT NOT NULL, finished TEXT,
        paths TEXT NOT NULL, summary TEXT
    );
    CREATE TABLE skipped (
        run_id INTEGER NOT NULL REFERENCES import_runs (run_id),
        path TEXT NOT NULL, reason TEXT NOT NULL
    );
    """,
    # 2: reads, their lesions and per-unit marks (one row per lesion: an edit is one small write).
    """
    CREATE TABLE reads (
        read_id TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL, reader TEXT NOT NULL,
        scheme_id TEXT NOT NULL, scheme_version TEXT NOT NULL, taxonomy TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('draft', 'submitted')),
        started TEXT NOT NULL, submitted TEXT, modified TEXT NOT NULL,
        revision INTEGER NOT NULL, next_lesion INTEGER NOT NULL
    );
    CREATE INDEX reads_by_study ON reads (study_uid, reader);
    CREATE TABLE lesions (
        read_id TEXT NOT NULL REFERENCES reads (read_id) ON DELETE CASCADE,
        lesion_id TEXT NOT NULL, ordinal INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (read_id, lesion_id)
    );
    CREATE TABLE unit_marks (
        read_id TEXT NOT NULL REFERENCES reads (read_id) ON DELETE CASCADE,
        unit_id TEXT NOT NULL,
        mark TEXT NOT NULL CHECK (mark IN ('no_lesion', 'not_assessable')),
        PRIMARY KEY (read_id, unit_id)
    );
    """,
    # 3: blinded reading studies, read versions and roles, the hash-chained audit trail.
    """
    CREATE TABLE reading_studies (
        name TEXT PRIMARY KEY, scheme_id TEXT NOT NULL, scheme_version TEXT NOT NULL,
        seed INTEGER NOT NULL, show_age_sex INTEGER NOT NULL, reveal_timepoints INTEGER NOT NULL,
        created TEXT NOT NULL, created_by TEXT NOT NULL
    );
    CREATE TABLE rs_cases (
        reading_study TEXT NOT NULL REFERENCES reading_studies (name),
        reading_code TEXT NOT NULL, study_uid TEXT NOT NULL, patient_code TEXT NOT NULL,
        timepoint INTEGER NOT NULL,
        PRIMARY KEY (reading_study, reading_code), UNIQUE (reading_study, study_uid)
    );
    CREATE TABLE rs_readers (
        reading_study TEXT NOT NULL REFERENCES reading_studies (name),
        reader TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('reader', 'adjudicator')),
        PRIMARY KEY (reading_study, reader)
    );
    CREATE TABLE rs_worklists (
        reading_study TEXT NOT NULL, reader TEXT NOT NULL, position INTEGER NOT NULL,
        reading_code TEXT NOT NULL,
        PRIMARY KEY (reading_study, reader, position), UNIQUE (reading_study, reader, reading_code)
    );
    ALTER TABLE reads ADD COLUMN reading_study TEXT;
    ALTER TABLE reads ADD COLUMN role TEXT NOT NULL DEFAULT 'reader';
    ALTER TABLE reads ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE reads ADD COLUMN supersedes TEXT;
    ALTER TABLE reads ADD COLUMN reason TEXT;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        entity TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
    );
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL
    );
    """,
    # 4: images at one position told apart (image type, b-value, echo, time, acquisition), each
    # stack's distinguishing value, how each role of a study composed (or why not), and the
    # station the reader chose where an acquisition was repeated.
    """
    ALTER TABLE images ADD COLUMN split_values TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE volumes ADD COLUMN variant TEXT NOT NULL DEFAULT '';
    ALTER TABLE volumes ADD COLUMN composition TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE compositions (
        study_uid TEXT NOT NULL, role TEXT NOT NULL, orientation TEXT NOT NULL,
        protocol TEXT NOT NULL, volume_id TEXT, message TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE INDEX compositions_by_study ON compositions (study_uid);
    CREATE TABLE station_choices (
        volume_id TEXT PRIMARY KEY, study_uid TEXT NOT NULL, set_at TEXT NOT NULL
    );
    """,
    # 5: absolute, normalised file paths (old relative ones resolved where provable); the
    # size and modification time of every imported file, so a re-import skips unchanged files.
    _absolute_paths,
    # 6: a reader's grades of items graded per bone unit (RAI-CROMRIS 2.0.0 extent); grade is JSON (0-9 or "NA").
    """
    CREATE TABLE unit_grades (
        read_id TEXT NOT NULL REFERENCES reads (read_id) ON DELETE CASCADE,
        unit_id TEXT NOT NULL, item_id TEXT NOT NULL, grade TEXT NOT NULL,
        PRIMARY KEY (read_id, unit_id, item_id)
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def default_store_dir() -> Path:
    """``$CNO_ANNOTATE_STORE``, else the per-user data directory."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    from platformdirs import user_data_dir

    return Path(user_data_dir("cno-annotate", appauthor=False)) / "store"


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """An open study store.

    Use :meth:`open`; the connection is in WAL mode with foreign keys on.
    """

    def __init__(self, root: Path, connection: sqlite3.Connection):
        self.root = root
        self.db = connection

    @classmethod
    def open(cls, root: Path | str | None = None) -> Store:
        """Open (creating if needed) the store at ``root`` and migrate it.

        Raises
        ------
        CnoError
            If the folder cannot be created, the file is not a store, or the
            store is newer than this program.
        """
        root = Path(root) if root is not None else default_store_dir()
        try:
            root.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(root / DB_NAME, timeout=30, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=NORMAL")
            store = cls(root, connection)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            raise CnoError(f"cannot open the store at {root}: {exc}") from None
        except OSError as exc:
            raise CnoError(f"cannot create the store at {root}: {exc.strerror}") from None
        return store

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    @property
    def cache_dir(self) -> Path:
        """Folder for cached composed volumes."""
        path = self.root / "cache"
        path.mkdir(exist_ok=True)
        return path

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CnoError(
                f"the store at {self.root} has schema version {version}; this program knows up "
                f"to {SCHEMA_VERSION}: update cno-annotate"
            )
        migrate(self.db, MIGRATIONS)

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self):
        """A write transaction: all or nothing (``with store.transaction() as db:``).

        Raises
        ------
        CnoError
            If SQLite cannot write (locked by another program, disk full, read-only);
            nothing of the transaction is applied.
        """
        try:
            with transaction(self.db) as db:
                yield db
        except sqlite3.OperationalError as exc:
            raise CnoError(f"the store at {self.root} could not be written ({exc}); nothing was changed") from None

    # -- queries ------------------------------------------------------------
    def studies(self) -> list[dict]:
        """Every study with its patient and volume counts, and how many of its files are missing on disk."""
        rows = self.db.execute(
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
        missing = missing_files(self.db)
        return [{**dict(r), "missing_files": missing.get(r["study_uid"], 0)} for r in rows]

    def volumes(self, study_uid: str | None = None) -> list[dict]:
        """Volumes (stacks, composed, NIfTI) with their effective role."""
        if study_uid is None:
            return self._volume_rows("1", ())
        return self._volume_rows("v.study_uid = ?", (study_uid,))

    def _volume_rows(self, where: str, args: tuple) -> list[dict]:
        sql = f"""
            SELECT v.*, COALESCE(o.role, v.auto_role) AS role, o.role IS NOT NULL AS overridden
            FROM volumes v LEFT JOIN role_overrides o USING (volume_id)
            WHERE {where}
            ORDER BY v.study_uid, v.kind = 'composed', v.description, v.volume_id
        """
        return [_volume_row(r) for r in self.db.execute(sql, args)]

    def volume(self, volume_id: str) -> dict:
        """One volume row.

        Raises
        ------
        CnoError
            If no volume has this id (a unique prefix of 8+ characters is accepted).
        """
        rows = self._volume_rows("v.volume_id = ?", (volume_id,))
        if not rows and len(volume_id) >= 8:
            pattern = volume_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self._volume_rows("v.volume_id LIKE ? ESCAPE '\\'", (pattern,))
        if len(rows) != 1:
            what = "no volume" if not rows else f"{len(rows)} volumes"
            raise CnoError(f"{what} with id {volume_id!r} in the store at {self.root} (see 'cno-annotate series')")
        return rows[0]

    def study_uid_for(self, text: str) -> str:
        """Resolve a study given by UID, accession number or patient ID.

        Raises
        ------
        CnoError
            If nothing or more than one study matches.
        """
        matches = [
            s["study_uid"] for s in self.studies()
            if text in (s["study_uid"], s["accession"], s["patient_id"])
        ]
        if len(matches) != 1:
            what = "no study" if not matches else f"{len(matches)} studies"
            raise CnoError(f"{what} match {text!r} in the store at {self.root} (see 'cno-annotate studies')")
        return matches[0]

    def images(self, series_uid: str) -> list[dict]:
        """Image rows of a DICOM series, with geometry decoded."""
        rows = self.db.execute("SELECT * FROM images WHERE series_uid = ?", (series_uid,))
        return [_image_row(r) for r in rows]

    def set_role(self, volume_id: str, role: str | None) -> None:
        """Override a volume's role (``None`` removes the override)."""
        with self.transaction():
            if role is None:
                self.db.execute("DELETE FROM role_overrides WHERE volume_id = ?", (volume_id,))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO role_overrides VALUES (?, ?, ?)", (volume_id, role, now())
                )

    def missing_files(self) -> dict[str, int]:
        """Study UID -> how many of its files are not on disk (studies with none are left out)."""
        return dict(missing_files(self.db))

    def relocate(self, old: str | os.PathLike[str], new: str | os.PathLike[str]) -> int:
        """Rewrite the folder prefix ``old`` to ``new`` in the recorded file paths; how many files moved.

        Raises
        ------
        CnoError
            If no recorded file lies under ``old`` (nothing is changed).
        """
        with self.transaction() as db:
            return relocate(db, os.fspath(old), os.fspath(new))
    def compositions(self, study_uid: str | None = None) -> list[dict]:
        """How each STIR / T1 protocol of a study composed, or why not (see ``derive``)."""
        where, args = ("WHERE study_uid = ?", (study_uid,)) if study_uid else ("", ())
        rows = self.db.execute(
            f"SELECT * FROM compositions {where} ORDER BY study_uid, role, orientation, protocol, message", args
        )
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    def choose_station(self, study_uid: str, volume_id: str | None, position: list[str]) -> None:
        """Record which acquisition of a repeated station the reader uses (``None``: the latest)."""
        with self.transaction() as db:
            db.executemany("DELETE FROM station_choices WHERE volume_id = ?", [(v,) for v in position])
            if volume_id is not None:
                db.execute("INSERT INTO station_choices VALUES (?, ?, ?)", (volume_id, study_uid, now()))

    def import_runs(self, limit: int = 10) -> list[dict]:
        """The latest import runs with their skipped files."""
        runs = []
        for r in self.db.execute("SELECT * FROM import_runs ORDER BY run_id DESC LIMIT ?", (limit,)):
            run = dict(r)
            run["summary"] = json.loads(run["summary"]) if run["summary"] else None
            run["paths"] = json.loads(run["paths"])
            run["skipped"] = [
                dict(s) for s in self.db.execute(
                    "SELECT path, reason FROM skipped WHERE run_id = ? ORDER BY path", (run["run_id"],)
                )
            ]
            runs.append(run)
        return runs


def _volume_row(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in ("shape", "affine", "members", "gaps", "composition"):
        out[key] = json.loads(out[key])
    if out.get("source_path"):
        out["source_path"] = from_text(out["source_path"])
    out["overridden"] = bool(out["overridden"])
    out["patient_geometry"] = bool(out["patient_geometry"])
    return out


def _image_row(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in ("position", "orientation", "pixel_spacing", "rescale", "split_values"):
        out[key] = json.loads(out[key])
    out["path"] = from_text(out["path"])
    out["geometry_known"] = bool(out["geometry_known"])
    return out

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cno_annotate.errors import CnoError, StoreWriteError
from cno_annotate.store import catalog, derived, instances, postgres
from cno_annotate.store.catalog import StudyRow, VolumeRow
from cno_annotate.store.derived import CompositionNote
from cno_annotate.store.files import check_file, file_identity, newer_message, sidecar, writable
from cno_annotate.store.instances import ImageRow
from cno_annotate.store.locations import RecordedFile, missing_files, recorded_files, relocate, resolve_relative_paths
from cno_annotate.store.sqlite import ByDialect, Step, migrate, statements, transaction

STORE_ENV = "CNO_ANNOTATE_STORE"
DB_NAME = "store.sqlite"
#: Seconds a command waits for another program's write lock.
DEFAULT_BUSY_TIMEOUT = 30.0
#: Seconds the viewer waits: an edit on a busy store is refused at once, and can be retried.
INTERACTIVE_BUSY_TIMEOUT = 0.3


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


#: Migration 10's tables: the reading packages a coordinator issued (the same on both backends).
PACKAGE_TABLES = """
    CREATE TABLE package_secrets (
        reading_study TEXT PRIMARY KEY REFERENCES reading_studies (name), secret TEXT NOT NULL
    );
    CREATE TABLE packages (
        package_id TEXT PRIMARY KEY, reading_study TEXT NOT NULL REFERENCES reading_studies (name),
        reader TEXT NOT NULL, created TEXT NOT NULL, content_hash TEXT NOT NULL, results_key TEXT NOT NULL,
        codes TEXT NOT NULL
    );
    CREATE TABLE package_uids (
        reading_study TEXT NOT NULL REFERENCES reading_studies (name),
        source_uid TEXT NOT NULL, package_uid TEXT NOT NULL,
        PRIMARY KEY (reading_study, source_uid), UNIQUE (reading_study, package_uid)
    );
"""

#: Raised when a reading study's design would change after its first read (reading_study.py says so in one line).
DESIGN_FIXED_MESSAGE = "the design of a reading study is fixed once reading has started"

#: Migration 14's column: a reading study's design.
DESIGN_COLUMN = """
    ALTER TABLE reading_studies ADD COLUMN design TEXT NOT NULL DEFAULT 'unpaired-blinded'
        CHECK (design IN ('unpaired-blinded', 'paired-chronological', 'paired-hidden-order'));
"""

#: Migration 17's table: the cases of a reading study published (de-identified) to a study PACS, by the
#: stand-in study UID under which the PACS holds them (store/published.py).
PUBLISHED_TABLE = """
    CREATE TABLE rs_published (
        reading_study TEXT NOT NULL, reading_code TEXT NOT NULL, pacs_study_uid TEXT NOT NULL,
        instances INTEGER NOT NULL, published TEXT NOT NULL,
        PRIMARY KEY (reading_study, reading_code),
        FOREIGN KEY (reading_study, reading_code) REFERENCES rs_cases (reading_study, reading_code)
    );
"""

#: Migration 18: why a second instance on one file is refused.
ONE_INSTANCE_MESSAGE = "a file holds one instance: another SOPInstanceUID is recorded at this path"
ONE_INSTANCE_PER_FILE = "".join(f"""
    CREATE TRIGGER images_one_instance_per_file_{event} BEFORE {statement} ON images
        WHEN NEW.path != '' AND EXISTS (SELECT 1 FROM images WHERE path = NEW.path AND sop_uid != NEW.sop_uid)
        BEGIN SELECT RAISE(ABORT, '{ONE_INSTANCE_MESSAGE}'); END;
""" for event, statement in (("insert", "INSERT"), ("update", "UPDATE OF path")))

#: Migration 22 on SQLite: the entry each audit entry follows on its object's chain, and where each chain ends.
AUDIT_CHAINS = """
    ALTER TABLE audit ADD COLUMN prev_seq INTEGER;
    CREATE TABLE audit_heads (entity TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL);
"""

#: Migration 27's table: the cases of a reading study a reader opened (looked at) without a read yet, with the
#: active time spent only looking; counted in progress until the first change makes the read (which takes the time).
OPENED_TABLE = """
    CREATE TABLE rs_opened (
        reading_study TEXT NOT NULL, reader TEXT NOT NULL, study_uid TEXT NOT NULL, opened TEXT NOT NULL,
        looked_seconds REAL NOT NULL DEFAULT 0 CHECK (looked_seconds >= 0),
        PRIMARY KEY (reading_study, reader, study_uid)
    );
"""

#: Raised when an opening (or time looked) is recorded for a case that is not on the reader's worklist.
OFF_WORKLIST_MESSAGE = "the case is not on the reader's worklist (taken off it, or moved to another reader)"

#: A case's row of rs_opened exists only while the case is on that reader's worklist (WHERE clause of a case on a
#: worklist, with NEW or OLD for the row).
_ON_WORKLIST = """EXISTS (SELECT 1 FROM rs_worklists w JOIN rs_cases c ON c.reading_study = w.reading_study
    AND c.reading_code = w.reading_code WHERE w.reading_study = {row}.reading_study AND w.reader = {row}.reader
    AND c.study_uid = {row}.study_uid)"""

#: Migration 28 on SQLite: a case taken off a reader's worklist (or moved to another reader) loses that reader's
#: opened record (the coordinator's audit entry of the change keeps the time looked); none is recorded for a case
#: that is not on the reader's worklist.
OPENED_FOLLOWS_WORKLIST = f"""
    CREATE TRIGGER rs_opened_on_worklist BEFORE INSERT ON rs_opened
        WHEN NOT {_ON_WORKLIST.format(row="NEW")}
        BEGIN SELECT RAISE(ABORT, '{OFF_WORKLIST_MESSAGE.replace("'", "''")}'); END;
    CREATE TRIGGER rs_opened_stays_on_worklist BEFORE UPDATE OF reading_study, reader, study_uid ON rs_opened
        WHEN NOT {_ON_WORKLIST.format(row="NEW")}
        BEGIN SELECT RAISE(ABORT, '{OFF_WORKLIST_MESSAGE.replace("'", "''")}'); END;
    CREATE TRIGGER rs_worklists_forget_opened AFTER DELETE ON rs_worklists
        BEGIN DELETE FROM rs_opened WHERE reading_study = OLD.reading_study AND reader = OLD.reader
            AND study_uid IN (SELECT study_uid FROM rs_cases WHERE reading_study = OLD.reading_study
                              AND reading_code = OLD.reading_code)
            AND NOT {_ON_WORKLIST.format(row="rs_opened")}; END;
    CREATE TRIGGER rs_worklists_forget_moved AFTER UPDATE OF reading_study, reader, reading_code ON rs_worklists
        BEGIN DELETE FROM rs_opened WHERE reading_study = OLD.reading_study AND reader = OLD.reader
            AND study_uid IN (SELECT study_uid FROM rs_cases WHERE reading_study = OLD.reading_study
                              AND reading_code = OLD.reading_code)
            AND NOT {_ON_WORKLIST.format(row="rs_opened")}; END;
"""

#: Migration 30 on SQLite: the view of the cases shows each one's key (the stand-in its server readers name it by).
CASE_KEY_VIEW = """
    DROP VIEW rs_cases_seen;
    CREATE VIEW rs_cases_seen AS
        SELECT c.reading_study, c.reading_code, c.study_uid, c.patient_code, c.timepoint, p.package_uid AS case_key
        FROM rs_cases c LEFT JOIN package_uids p ON p.reading_study = c.reading_study AND p.source_uid = c.study_uid;
"""

MIGRATIONS: list[Step | ByDialect] = [
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
    # 7: locks and uniqueness enforced by the database; every read and reading study gets an audited state.
    ByDialect(lambda connection: _lock_reads(connection), lambda connection: _lock_reads(connection)),
    # 8: a submitted read cannot be replaced (INSERT OR REPLACE, UPDATE OR REPLACE delete the old row
    # without firing the delete trigger). PostgreSQL has no REPLACE: an upsert fires the update triggers.
    ByDialect(lambda connection: _lock_replacing(connection), lambda connection: None),
    # 9: every audited edit looks up its object's latest entry: an index keeps that off a table scan.
    "CREATE INDEX audit_by_entity ON audit (entity, seq)",
    # 10: de-identified reading packages (coordinator side): the study's secret that derives stand-in UIDs
    # and date offsets, each issued package, and every source UID with its stand-in (for collect).
    ByDialect(PACKAGE_TABLES + """
    CREATE TRIGGER package_uids_fixed BEFORE UPDATE ON package_uids
        BEGIN SELECT RAISE(ABORT, 'a stand-in UID never changes'); END;
    """, lambda connection: connection.script(postgres.pg_ddl(PACKAGE_TABLES) + postgres.PACKAGE_UIDS_FIXED)),
    # 11: a read's regions of interest (ROIs; data is the ROI's JSON form, points in LPS mm), locked with the read.
    ByDialect(lambda connection: _add_rois(connection),
              lambda connection: connection.script(postgres.pg_ddl(ROIS_TABLE) + postgres.part_lock_trigger("rois"))),
    # 12: on a PostgreSQL server, access by database role: the audit trail written by the database and
    # append-only, row-level security and column privileges for readers and adjudicators (postgres.py).
    # An SQLite store has one user: nothing to add but the audit entries that let a read's audited state
    # cover its ROIs from here on (schema 11 recorded states without them).
    ByDialect(lambda connection: _audit_rois(connection), lambda connection: connection.script(postgres.access_rules())),
    # 13: tracking UIDs (every lesion gets one; a later version's lesion the one of the version it copies),
    # and follow-up reads: the prior read and the outcome of each prior lesion, locked and audited like the lesions.
    ByDialect(lambda connection: _track_lesions(connection), lambda connection: _track_lesions(connection)),
    # 14: a reading study's design (unpaired blinded, paired chronological, paired with hidden order),
    # fixed by the database once reading has started.
    ByDialect(DESIGN_COLUMN + f"""
    CREATE TRIGGER reading_study_design_fixed BEFORE UPDATE OF design ON reading_studies
        WHEN NEW.design != OLD.design AND EXISTS (SELECT 1 FROM reads WHERE reading_study = OLD.name)
        BEGIN SELECT RAISE(ABORT, '{DESIGN_FIXED_MESSAGE}'); END;
    """, lambda connection: connection.script(postgres.pg_ddl(DESIGN_COLUMN)
                                              + postgres.design_fixed_trigger(DESIGN_FIXED_MESSAGE))),
    # 15: active reading time per read (added as the reader works, locked with the read once submitted;
    # kept beside the read so that it never bumps the read's revision); a reading study's idle limit and
    # whether readers see the timer. On PostgreSQL a reader may write only their own reads' times.
    ByDialect(lambda connection: _add_reading_time(connection),
              lambda connection: connection.script(postgres.pg_ddl(READ_TIMES_TABLE) + postgres.reading_time_rules())),
    # 16: on a PostgreSQL server, reading progress announced live: a read created, deleted or changing
    # status, or a worklist changing, is notified (pg_notify) at commit for the viewers that LISTEN
    # (store/live.py). An SQLite store has no server to notify from: nothing to add.
    ByDialect("", lambda connection: connection.script(postgres.LIVE_NOTIFY)),
    # 17: the cases of a reading study published de-identified to a study PACS (reading-study publish), by
    # their stand-in study UID; on PostgreSQL a reader or adjudicator sees the rows of their worklist only.
    ByDialect(PUBLISHED_TABLE, lambda connection: connection.script(postgres.pg_ddl(PUBLISHED_TABLE)
                                                                    + postgres.PUBLISHED_RULES)),
    # 18: a file holds one instance: no path is recorded for two SOPInstanceUIDs (a re-import of a
    # folder whose files now hold other instances gives the old ones up first). Existing rows are
    # left as they are; every later write is checked.
    ByDialect(ONE_INSTANCE_PER_FILE, lambda connection: connection.script(
        postgres.one_instance_per_file_trigger(ONE_INSTANCE_MESSAGE))),
    # 19: on a PostgreSQL server, one edit of a read is one statement (cno_edit_read): the database locks the
    # read, checks its revision and audited state, writes the parts, bumps the revision, computes the content
    # hash and appends the audit entry, and returns the read. An SQLite store does the same from Python.
    ByDialect("", lambda connection: connection.script(postgres.edit_functions())),
    # 20: on a PostgreSQL server, a reader's or adjudicator's audit entry (cno_audit_append) must be about a
    # read of theirs and record the state the database computes for it and the trail's state before it: a
    # forged entry could otherwise make audit verify report a change and lock the read against every edit.
    ByDialect("", lambda connection: connection.script(postgres.truthful_audit())),
    # 21: the cases of reading studies as a reader may see them (rs_cases_seen): on a PostgreSQL server a
    # reader or adjudicator may not select rs_cases' patient code and timepoint, and the view shows them only
    # as the study's design allows (an unpaired blinded study hides which cases are one patient and their
    # order). An SQLite store has one user: the view shows every case as it is.
    ByDialect("CREATE VIEW rs_cases_seen AS SELECT reading_study, reading_code, study_uid, patient_code, timepoint "
              "FROM rs_cases", lambda connection: connection.script(postgres.cases_seen())),
    # 22: a hash chain per audited object (audit.py): an entry follows the object's previous entry
    # (prev_seq, prev_hash), an object's first entry follows the spine (audit_head, the chain of first entries
    # and of every entry written before), and each object's chain ends where audit_heads says. Writers of
    # different reads no longer queue on one chain head until their commit is on disk. On a PostgreSQL server
    # entries are numbered from a sequence (a number is never given twice; a rolled-back entry leaves a gap).
    ByDialect(AUDIT_CHAINS, lambda connection: connection.script(postgres.audit_chains())),
    # 23: on a PostgreSQL server, a read's first change (which makes it, audited, with the reading time measured
    # before), a submit and a follow-up are one statement each, like an edit (cno_change_read). SQLite: nothing.
    ByDialect("", lambda connection: connection.script(postgres.one_statement_writes())),
    # 24: on a PostgreSQL server, a reader's or adjudicator's audit entry is one the program writes for them: an
    # action name of theirs that matches the read (create, new-version, follow-up, submit, an edit's label on a
    # draft), or the export of reads all theirs. An SQLite store has one user: nothing to add.
    ByDialect("", lambda connection: connection.script(postgres.reader_entries())),
    # 25: on a PostgreSQL server, live progress on one secret channel per login (migration 16 used one channel
    # that any login could listen to): a read's reader, the coordinators and, once submitted, the case's
    # adjudicators hear of it. An SQLite store has no server to notify from: nothing to add.
    ByDialect("", lambda connection: connection.script(postgres.private_channels())),
    # 26: on a PostgreSQL server, readers and adjudicators select nothing of the studies and volumes tables (the
    # source study and series UIDs); their viewer shows the study PACS's de-identified copies. SQLite: nothing to add.
    ByDialect("", lambda connection: connection.script(postgres.IMAGING_HIDDEN)),
    # 27: a case of a reading study opened (looked at) before any read of it, with the active time spent only
    # looking (rs_opened): progress tells opened from not started, and the time is not lost when the reader moves
    # on. On PostgreSQL a reader or adjudicator records this only under their login, for their worklist's cases.
    ByDialect(OPENED_TABLE, lambda connection: connection.script(postgres.pg_ddl(OPENED_TABLE) + postgres.OPENED_RULES)),
    # 28: an opened case belongs to the reader's worklist: taking a case off it (or moving it to another reader)
    # forgets that reader's opened record, whose time the coordinator's audit entry keeps; none is recorded for a
    # case off the worklist. On PostgreSQL also: a reader's first opening of a case notifies the coordinators and
    # the reader's own sessions (live progress).
    ByDialect(OPENED_FOLLOWS_WORKLIST, lambda connection: connection.script(postgres.opened_follows_worklist())),
    # 29: on a PostgreSQL server, a change of a read (cno_change_read) runs as the store's owner and checks the
    # caller's access itself (their own read, under their own login, an entry the program writes for them): the
    # read's state is hashed before and after and its audited state read once, not five times under the caller's
    # row security (whose filter made each lookup read the read's whole trail). SQLite: nothing to add.
    ByDialect("", lambda connection: connection.script(postgres.trusted_edits())),
    # 30: a case's key (case_key of rs_cases_seen): the stand-in of its study UID, recorded in the reading study's
    # UID pairs when the case is added. On a PostgreSQL server a reader's or adjudicator's login sees the key as the
    # case's study UID and names it so in their reads and openings (the server refuses the source UID there); the
    # coordinator's login maps them back through the same pairs. An SQLite store shows the key beside the study UID.
    ByDialect(CASE_KEY_VIEW, postgres.case_keys),
    # 31: on a PostgreSQL server, the functions an edit calls keep their plans for the session (cno_json inlined,
    # cno_read_json and cno_reader_entry_allowed in PL/pgSQL): the same results, hashes and rules, a third of the
    # server's time per edit less. SQLite: nothing to add.
    ByDialect("", lambda connection: connection.script(postgres.PLANNED_ONCE)),
    # 32: on a PostgreSQL server, a reader of a reading study that shows age and sex gets the two values of a case
    # of their worklist from the owner (cno_case_age_sex), as they select nothing of the studies and patients tables
    # (migration 26). SQLite: nothing to add.
    ByDialect("", lambda connection: connection.script(postgres.CASE_AGE_SEX)),
    # 33: what a radiologist calls a volume's series ("Dixon water", "T2 fat-sat"; "" when the headers do not say),
    # recognised from its headers with its role; series labels show it instead of "other". Filled by the next rebuild.
    "ALTER TABLE volumes ADD COLUMN sequence TEXT NOT NULL DEFAULT ''",
]

SCHEMA_VERSION = len(MIGRATIONS)

#: Checked at every open (quick_check): small, and what must never be served damaged.
QUICK_CHECKED_TABLES = ("reads", "lesions", "unit_marks", "unit_grades", "rois", "followup_outcomes", "read_times",
                        "audit", "audit_head", "audit_heads", "reading_studies", "rs_cases", "rs_readers", "rs_worklists", "patients",
                        "studies")


def is_integrity_error(exc: BaseException) -> bool:
    """A change refused by a constraint or a lock trigger, on either backend."""
    return isinstance(exc, sqlite3.IntegrityError) or postgres.is_integrity_error(exc)

#: Raised by the triggers below; reads.py turns it into ReadLocked.
LOCKED_MESSAGE = "read is submitted and locked"

UNIQUE_READS = """
    CREATE UNIQUE INDEX reads_one_first_version
        ON reads (study_uid, reader, COALESCE(reading_study, ''), role) WHERE supersedes IS NULL;
    CREATE UNIQUE INDEX reads_one_successor ON reads (supersedes) WHERE supersedes IS NOT NULL;
"""

def _row_locks(table: str) -> str:
    """Triggers refusing any change to ``table``'s rows of a submitted read."""
    return f"""
    CREATE TRIGGER {table}_locked_insert BEFORE INSERT ON {table}
        WHEN (SELECT status FROM reads WHERE read_id = NEW.read_id) = 'submitted'
        BEGIN SELECT RAISE(ABORT, '{LOCKED_MESSAGE}'); END;
    CREATE TRIGGER {table}_locked_update BEFORE UPDATE ON {table}
        WHEN (SELECT status FROM reads WHERE read_id = OLD.read_id) = 'submitted'
          OR (SELECT status FROM reads WHERE read_id = NEW.read_id) = 'submitted'
        BEGIN SELECT RAISE(ABORT, '{LOCKED_MESSAGE}'); END;
    CREATE TRIGGER {table}_locked_delete BEFORE DELETE ON {table}
        WHEN (SELECT status FROM reads WHERE read_id = OLD.read_id) = 'submitted'
        BEGIN SELECT RAISE(ABORT, '{LOCKED_MESSAGE}'); END;
    """


LOCKS = UNIQUE_READS + f"""
    CREATE TRIGGER reads_locked_update BEFORE UPDATE ON reads WHEN OLD.status = 'submitted'
        BEGIN SELECT RAISE(ABORT, '{LOCKED_MESSAGE}'); END;
    CREATE TRIGGER reads_locked_delete BEFORE DELETE ON reads WHEN OLD.status = 'submitted'
        BEGIN SELECT RAISE(ABORT, '{LOCKED_MESSAGE}'); END;
""" + "".join(_row_locks(table) for table in ("lesions", "unit_marks", "unit_grades"))


ROIS_TABLE = """
    CREATE TABLE rois (
        read_id TEXT NOT NULL REFERENCES reads (read_id) ON DELETE CASCADE,
        roi_id TEXT NOT NULL, ordinal INTEGER NOT NULL, data TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('measurement', 'muscle', 'lesion')),
        PRIMARY KEY (read_id, roi_id)
    );
    CREATE UNIQUE INDEX rois_one_muscle ON rois (read_id) WHERE role = 'muscle';
"""
ROIS = ROIS_TABLE + _row_locks("rois")


def _add_rois(connection: sqlite3.Connection) -> None:
    """Migration 11: the rois table, one muscle ROI per read, locked with its read."""
    for statement in statements(ROIS):
        connection.execute(statement)


#: Raised when a change would replace a submitted read of the same case; reads.py makes it a ReadConflict.
REPLACED_MESSAGE = "UNIQUE: a submitted read holds this case (reads_one_first_version or reads_one_successor)"

_SAME_CASE = """
    (r.read_id = NEW.read_id
     OR (NEW.supersedes IS NULL AND r.supersedes IS NULL AND r.study_uid = NEW.study_uid AND r.reader = NEW.reader
         AND COALESCE(r.reading_study, '') = COALESCE(NEW.reading_study, '') AND r.role = NEW.role)
     OR (NEW.supersedes IS NOT NULL AND r.supersedes = NEW.supersedes))
"""

REPLACE_LOCKS = f"""
    CREATE TRIGGER reads_locked_replace BEFORE INSERT ON reads
        WHEN EXISTS (SELECT 1 FROM reads r WHERE r.read_id = NEW.read_id AND r.status = 'submitted')
        BEGIN SELECT RAISE(ABORT, '{LOCKED_MESSAGE}'); END;
    CREATE TRIGGER reads_case_replace BEFORE INSERT ON reads
        WHEN EXISTS (SELECT 1 FROM reads r WHERE r.status = 'submitted' AND r.read_id != NEW.read_id AND {_SAME_CASE})
        BEGIN SELECT RAISE(ABORT, '{REPLACED_MESSAGE}'); END;
    CREATE TRIGGER reads_update_replace BEFORE UPDATE ON reads
        WHEN EXISTS (SELECT 1 FROM reads r WHERE r.status = 'submitted' AND r.read_id != OLD.read_id AND {_SAME_CASE})
        BEGIN SELECT RAISE(ABORT, '{REPLACED_MESSAGE}'); END;
"""


#: Migration 13's table and column (the same on both backends): a follow-up read's prior read, and the outcome
#: of each lesion of the prior read (by tracking UID).
FOLLOWUP_TABLE = """
    ALTER TABLE reads ADD COLUMN prior_read TEXT;
    CREATE TABLE followup_outcomes (
        read_id TEXT NOT NULL REFERENCES reads (read_id) ON DELETE CASCADE,
        tracking_uid TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('persisting', 'resolved', 'not_assessable')),
        PRIMARY KEY (read_id, tracking_uid)
    );
"""


def _track_lesions(connection: Any) -> None:
    """Migration 13: the follow-up table, and a tracking UID for every lesion that has none (audited per read).

    Versions are handled oldest first, so a lesion of a later version gets the
    tracking UID of the lesion with the same id in the version it replaced.
    The lock trigger on lesions is lifted for the step only (submitted reads
    gain their UIDs too) and put back as it was; the step is one transaction,
    so no other program sees the store without it.
    """
    if getattr(connection, "dialect", "sqlite") == postgres.DIALECT:
        connection.script(postgres.pg_ddl(FOLLOWUP_TABLE) + postgres.followup_rules())
        connection.script("ALTER TABLE lesions DISABLE TRIGGER lesions_locked")
        _give_tracking_uids(connection)
        # The commit-time audit checks of the changed lesions run now (each read's entry is written): a table
        # with pending trigger events cannot be altered.
        connection.script("SET CONSTRAINTS ALL IMMEDIATE; ALTER TABLE lesions ENABLE TRIGGER lesions_locked; "
                          "SET CONSTRAINTS ALL DEFERRED")
        return
    for statement in statements(FOLLOWUP_TABLE + _row_locks("followup_outcomes")):
        connection.execute(statement)
    trigger = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                                 "AND name = 'lesions_locked_update'").fetchone()
    if trigger is not None:
        connection.execute("DROP TRIGGER lesions_locked_update")
    _give_tracking_uids(connection)
    if trigger is not None:
        connection.execute(trigger[0])


def _audit_rois(connection: sqlite3.Connection) -> None:
    """Migration 12 on SQLite: an audit entry per read with ROIs, from the state schema 11 recorded to today's.

    Schema 11 hashed a read's audited state without its ROIs; from 12 on the
    state covers them. Without this entry, 'audit verify' would report every
    read with an ROI as changed outside the program after the upgrade.
    """
    from cno_annotate.store import audit

    for (read_id,) in connection.execute("SELECT DISTINCT read_id FROM rois ORDER BY read_id").fetchall():
        audit.append(connection, "cno-annotate", "migrate", f"read:{read_id}",
                     state_before=audit.read_state(connection, read_id, with_rois=False),
                     reason="the audited state covers the read's ROIs from store schema 12")


def _give_tracking_uids(connection: Any) -> None:
    """A tracking UID for every lesion that has none, a later version's from the version it replaced."""
    from cno_annotate.store import audit
    from cno_annotate.uids import new_uid

    uids: dict[tuple[str, str], str] = {}
    reads = connection.execute("SELECT read_id, supersedes FROM reads ORDER BY version, started, read_id").fetchall()
    for read_id, supersedes in reads:
        rows = connection.execute("SELECT lesion_id, data FROM lesions WHERE read_id = ?", (read_id,)).fetchall()
        state = audit.read_state(connection, read_id)
        changed = 0
        for lesion_id, data in rows:
            try:
                fields = json.loads(data)
            except ValueError:
                continue  # a damaged row stays as it is: 'store check' names it
            if not isinstance(fields, dict) or fields.get("tracking_uid"):
                if isinstance(fields, dict):
                    uids[(read_id, lesion_id)] = fields["tracking_uid"]
                continue
            uid = uids.get((supersedes or "", lesion_id)) or new_uid()
            uids[(read_id, lesion_id)] = uid
            connection.execute("UPDATE lesions SET data = ? WHERE read_id = ? AND lesion_id = ?",
                               (json.dumps({**fields, "tracking_uid": uid}), read_id, lesion_id))
            changed += 1
        if changed:
            audit.append(connection, "cno-annotate", "migrate", f"read:{read_id}", state_before=state,
                         reason=f"tracking UIDs given to {changed} lesions (store schema 13)")


READ_TIMES_TABLE = """
    CREATE TABLE read_times (
        read_id TEXT PRIMARY KEY REFERENCES reads (read_id) ON DELETE CASCADE,
        active_seconds REAL NOT NULL CHECK (active_seconds >= 0)
    );
    ALTER TABLE reading_studies ADD COLUMN show_timer INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reading_studies ADD COLUMN idle_seconds REAL NOT NULL DEFAULT 60 CHECK (idle_seconds > 0);
"""
READ_TIMES = READ_TIMES_TABLE + _row_locks("read_times")


def _add_reading_time(connection: sqlite3.Connection) -> None:
    """Migration 15: the read_times table with its lock triggers, and the reading studies' timer settings."""
    for statement in statements(READ_TIMES):
        connection.execute(statement)


def _lock_replacing(connection: sqlite3.Connection) -> None:
    """Migration 8: triggers that refuse an insert or update replacing a submitted read (by id or by case)."""
    for statement in statements(REPLACE_LOCKS):
        connection.execute(statement)


def _lock_reads(connection: Any) -> None:
    """Migration 7: drop empty duplicate drafts, add the unique indexes and lock triggers, audit a baseline.

    Opening a case in two programs used to create two drafts; the extra ones
    that hold nothing are removed (audited). Duplicates holding lesions or
    marks are not guessed at: the store is refused with their ids.
    """
    from cno_annotate.store import audit

    on_postgres = getattr(connection, "dialect", "sqlite") == postgres.DIALECT
    case_key = "jsonb_build_array" if on_postgres else "json_array"
    duplicates = connection.execute(
        f"""
        SELECT r.read_id, r.status,
               EXISTS (SELECT 1 FROM lesions l WHERE l.read_id = r.read_id)
               OR EXISTS (SELECT 1 FROM unit_marks m WHERE m.read_id = r.read_id) AS holds,
               EXISTS (SELECT 1 FROM reads n WHERE n.supersedes = r.read_id) AS superseded,
               ROW_NUMBER() OVER (
                   PARTITION BY CASE WHEN r.supersedes IS NULL
                       THEN {case_key}(r.study_uid, r.reader, COALESCE(r.reading_study, ''), r.role)
                       ELSE {"to_jsonb(r.supersedes)" if on_postgres else "r.supersedes"} END
                   ORDER BY r.status = 'draft', r.started, r.read_id) AS rank
        FROM reads r
        """).fetchall()
    for read_id, status, holds, superseded, rank in duplicates:
        if rank == 1:
            continue
        if status != "draft" or holds or superseded:
            raise CnoError(f"the store holds two reads of one case by one reader ({read_id} and another; "
                           f"made by an older cno-annotate): export them with 'cno-annotate read export' and "
                           f"ask for help to merge them")
        connection.execute("DELETE FROM reads WHERE read_id = ?", (read_id,))
        audit.append(connection, "cno-annotate", "delete", f"read:{read_id}",
                     state_before=None, reason="an empty duplicate draft (the case was opened twice at once)")
    if on_postgres:
        connection.script(UNIQUE_READS + postgres.lock_triggers(LOCKED_MESSAGE))
    else:
        for statement in statements(LOCKS):
            connection.execute(statement)
    for (read_id,) in connection.execute("SELECT read_id FROM reads ORDER BY read_id").fetchall():
        audit.append(connection, "cno-annotate", "baseline", f"read:{read_id}", state_before=None)
    for (name,) in connection.execute("SELECT name FROM reading_studies ORDER BY name").fetchall():
        audit.append(connection, "cno-annotate", "baseline", f"reading-study:{name}", state_before=None)


def _user_cache(root: Path | str) -> Path:
    """A per-user temporary cache folder for the store at ``root`` (a folder, or a server URL as text)."""
    import getpass
    import hashlib
    import tempfile

    user = str(os.getuid()) if hasattr(os, "getuid") else getpass.getuser()
    place = root if isinstance(root, str) else str(Path(root).resolve())  # a URL is no path of this machine
    key = hashlib.sha256(place.encode("utf-8")).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"cno-annotate-cache-{user}" / key
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def default_store_dir() -> Path:
    """``$CNO_ANNOTATE_STORE``, else the per-user data directory."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    from platformdirs import user_data_dir

    return Path(user_data_dir("cno-annotate", appauthor=False)) / "store"


def default_store_location() -> Path | str:
    """``$CNO_ANNOTATE_STORE`` (a folder, or a ``postgresql://`` URL), else the per-user data directory."""
    value = os.environ.get(STORE_ENV)
    if value and postgres.is_url(value):
        return value
    return default_store_dir()


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """An open study store.

    Use :meth:`open`; the connection is in WAL mode with foreign keys on and
    ``synchronous=FULL`` (a commit is on disk when it returns; see bench/README.md
    for the measured cost). ``read_only`` is True when the store was opened for
    reading only (read-only media, or asked for).
    """

    def __init__(self, root: Path, connection: sqlite3.Connection, read_only: bool = False,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT):
        self.root = root
        self.db = connection
        self.read_only = read_only
        self._busy_timeout = busy_timeout
        self._wal: tuple[int, int] | None = None

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
             read_only: bool | None = None, quick_check: bool = True) -> Store:
        """Open (creating if needed) the store at ``root`` and migrate it.

        Parameters
        ----------
        root : path, optional
            The store folder (default :func:`default_store_dir`).
        busy_timeout : float
            Seconds to wait for another program's write lock before an edit is
            refused; interactive sessions use :data:`INTERACTIVE_BUSY_TIMEOUT`.
        read_only : bool, optional
            Open for reading only. ``None`` (default): read-only when the store
            exists but cannot be written (read-only media), else read-write.
        quick_check : bool
            Run SQLite's ``quick_check`` before use (a damaged store is refused).

        Raises
        ------
        CnoError
            If the folder cannot be created, the file is empty or not a store,
            the store is newer than this program, damaged, or lost committed
            changes with a deleted write-ahead log. A refusal writes nothing.
        """
        location = root if root is not None else default_store_location()
        if postgres.is_url(location):
            return PgStore.connect(str(location), busy_timeout, bool(read_only))
        root = Path(location)
        path = root / DB_NAME
        try:
            if path.exists():
                check_file(path, SCHEMA_VERSION)
                automatic = read_only is None
                read_only = bool(read_only) or not (writable(root) and writable(path))
            elif read_only:
                raise CnoError(f"there is no store at {root}")
            else:
                automatic, read_only = False, False
                root.mkdir(parents=True, exist_ok=True)
                _create(path)
            try:
                store = cls._connected(root, busy_timeout, read_only, quick_check)
            except sqlite3.OperationalError as exc:
                if not automatic or read_only or not _cannot_write(exc):
                    raise
                store = cls._connected(root, busy_timeout, True, quick_check)  # e.g. a full disk
        except sqlite3.OperationalError as exc:
            raise CnoError(f"cannot open the store at {root}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise CnoError(f"the store at {root} is damaged ({exc}); run 'cno-annotate store check' and restore it "
                           f"from a backup (nothing was changed)") from None
        except OSError as exc:
            raise CnoError(f"cannot create the store at {root}: {exc.strerror}") from None
        return store

    @classmethod
    def _connected(cls, root: Path, busy_timeout: float, read_only: bool, quick_check: bool) -> Store:
        connection = _connect(root / DB_NAME, busy_timeout, read_only)
        store = cls(root, connection, read_only, busy_timeout)
        try:
            store._prepare(quick_check)
        except BaseException:
            connection.close()
            raise
        return store

    def _prepare(self, quick_check: bool) -> None:
        """Check the version and health, then set the connection up and migrate."""
        self._refuse_newer()
        if quick_check:
            problem = self._quick_check()
            if problem != "ok":
                raise CnoError(f"the store at {self.root} is damaged ({problem}); run 'cno-annotate store "
                               f"check' and restore the store from a backup")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA recursive_triggers=ON")  # a REPLACE fires the delete triggers too
        if self.read_only:
            if self.schema_version < SCHEMA_VERSION:
                raise CnoError(f"the store at {self.root} is read-only and from an older cno-annotate "
                               f"(schema {self.schema_version}); open it once where it can be written to upgrade it")
            return
        self.db.execute("PRAGMA synchronous=FULL")
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.db.execute("PRAGMA journal_mode=WAL")
        self._migrate()
        self._wal = file_identity(sidecar(self.root / DB_NAME, "-wal"))

    def _quick_check(self) -> str:
        """SQLite's ``quick_check`` of the tables holding the readers' work, the trail and the patients.

        The image index (the bulk of a large store: 170 ms for 100,000 images,
        bench/README.md) is left to ``cno-annotate store check``; a damaged page
        there is still refused with one line when a command reads it.
        """
        present = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in QUICK_CHECKED_TABLES:
            if table in present:
                problem = self.db.execute(f"PRAGMA quick_check({table})").fetchone()[0]
                if problem != "ok":
                    return " ".join(problem.split())  # SQLite's report can span lines: one line
        return "ok"

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    @property
    def folder(self) -> Path | None:
        """The store's folder on this machine (None for a store on a server)."""
        return self.root

    @property
    def cache_dir(self) -> Path:
        """Folder for cached composed volumes: the store's ``cache/``, or a per-user temporary folder.

        A store opened read-only (read-only media) is never written to: its
        volumes are cached in a folder of this user's temporary directory, one
        per store.
        """
        if not self.read_only:
            path = self.root / "cache"
            try:
                path.mkdir(exist_ok=True)
                return path
            except OSError:
                pass  # the folder cannot be made: cache elsewhere rather than fail to show the volume
        return _user_cache(self.root)

    def _refuse_newer(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CnoError(newer_message(self.root, version, SCHEMA_VERSION))

    def _migrate(self) -> None:
        migrate(self.db, MIGRATIONS)

    @contextmanager
    def deferred_flush(self) -> Iterator[None]:
        """Commits inside are durable from the first full commit after the block, not one by one.

        For a bulk write made of many transactions (an import). Inside,
        ``synchronous=NORMAL``: in WAL mode a commit is written to the log but
        not flushed to the disk, so it survives a crash of this program (the
        data is with the operating system) but not a power cut or a crash of
        the operating system, after which the database is still consistent and
        holds the earlier commits. After the block ``synchronous=FULL`` again:
        the next commit flushes the log, and with it every commit before it.
        """
        if self.read_only:
            yield
            return
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self):
        """A write transaction: all or nothing (``with store.transaction() as db:``).

        After the commit, a write-ahead log deleted behind the program's back
        is noticed: its committed contents are copied into the main file and
        the connection is reopened, so a crash later loses nothing.

        Raises
        ------
        StoreWriteError
            If SQLite cannot write (locked by another program, disk full, read-only);
            nothing of the transaction is applied.
        """
        if self.read_only:
            raise StoreWriteError(f"the store at {self.root} is open read-only (read-only media?); "
                                  f"nothing was changed", "read-only")
        try:
            with transaction(self.db) as db:
                yield db
        except sqlite3.OperationalError as exc:
            raise StoreWriteError(f"the store at {self.root} could not be written ({exc}); nothing was changed",
                                  str(exc)) from None
        self._check_wal()

    @property
    def name(self) -> str:
        """Where the store is, for messages: its folder (a server: host and database, see :class:`PgStore`)."""
        return str(self.root)

    @contextmanager
    def single_statement(self):
        """A write of one statement, which is its own transaction (``with store.single_statement() as db:``).

        Refused and reported as :meth:`transaction` does. SQLite runs it in a
        transaction; a server runs the statement alone (no BEGIN and COMMIT
        round trips).
        """
        with self.transaction() as db:
            yield db

    def _check_wal(self) -> None:
        """Save the commits of a write-ahead log that was deleted while open, then reopen."""
        wal = sidecar(self.root / DB_NAME, "-wal")
        identity = file_identity(wal)
        if self._wal is None or identity == self._wal:
            self._wal = identity
            return
        self.db.execute("PRAGMA wal_checkpoint(FULL)")
        self.db.close()
        self.db = _connect(self.root / DB_NAME, self._busy_timeout, False)
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA recursive_triggers=ON")
        self.db.execute("PRAGMA synchronous=FULL")
        self._wal = None

    # -- queries ------------------------------------------------------------
    def studies(self, count_missing: bool = True) -> list[StudyRow]:
        """Every study with its patient and volume counts, and how many of its files are missing on disk.

        ``count_missing=False``: no file is looked at (``missing_files`` is then 0), for callers that
        need the studies only: counting stats every file of every study (a 100-study store: 40,000).
        """
        return catalog.studies(self.db, missing_files(self.db) if count_missing else {})

    def first_study_uid(self) -> str | None:
        """The UID of the study :meth:`studies` lists first (by date and UID), or None; no file is looked at."""
        row = self.db.execute("SELECT study_uid FROM studies ORDER BY study_date, study_uid LIMIT 1").fetchone()
        return row[0] if row else None

    def study_uids(self) -> set[str]:
        """The UIDs of the studies this login may see (readers on a server: those of their worklist)."""
        return {r[0] for r in self.db.execute("SELECT study_uid FROM studies")}

    def series_of_studies(self) -> dict[str, set[str]]:
        """Study UID -> the ids a lesion may name as its series: volume ids and their DICOM series UIDs."""
        out: dict[str, set[str]] = {}
        for study_uid, volume_id, series_uid in self.db.execute("SELECT study_uid, volume_id, series_uid FROM volumes"):
            out.setdefault(study_uid, set()).update(v for v in (volume_id, series_uid) if v)
        return out

    def volumes(self, study_uid: str | None = None) -> list[VolumeRow]:
        """Volumes (stacks, composed, NIfTI) with their effective role, of one study or all."""
        if study_uid is None:
            return catalog.volumes(self.db)
        return catalog.volumes(self.db, "v.study_uid = ?", (study_uid,))

    def volume(self, volume_id: str) -> VolumeRow:
        """One volume.

        Raises
        ------
        CnoError
            If no volume has this id (a unique prefix of 8+ characters is accepted).
        """
        rows = catalog.volumes(self.db, "v.volume_id = ?", (volume_id,))
        if not rows and len(volume_id) >= 8:
            pattern = volume_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = catalog.volumes(self.db, "v.volume_id LIKE ? ESCAPE '\\'", (pattern,))
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
        matches = [s.study_uid for s in self.studies(count_missing=False) if text in (s.study_uid, s.accession, s.patient_id)]
        if len(matches) != 1:
            what = "no study matches" if not matches else f"{len(matches)} studies match"
            raise CnoError(f"{what} {text!r} in the store at {self.root} (see 'cno-annotate studies')")
        return matches[0]

    def images(self, series_uid: str) -> list[ImageRow]:
        """The images of a DICOM series (a row per frame), with geometry decoded."""
        return instances.series_images(self.db, series_uid)

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

    def recorded_files(self, file_paths) -> dict[str, RecordedFile]:
        """What the imports recorded of some DICOM files (size, time, instance); path -> record."""
        return recorded_files(self.db, file_paths)

    def relocate(self, old: str | os.PathLike[str], new: str | os.PathLike[str]) -> int:
        """Rewrite the folder prefix ``old`` to ``new`` in the recorded file paths; how many files moved.

        Raises
        ------
        CnoError
            If no recorded file lies under ``old`` (nothing is changed).
        """
        with self.transaction() as db:
            return relocate(db, os.fspath(old), os.fspath(new))
    def compositions(self, study_uid: str | None = None) -> list[CompositionNote]:
        """How each STIR / T1 protocol of a study (or of every study) composed, or why not (see ``derive``)."""
        return derived.compositions(self.db, study_uid)

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


def integrity_problems(root: Path, limit: int = 20) -> list[str]:
    """SQLite's full ``integrity_check`` of a store, read-only; an empty list when it is intact.

    Raises
    ------
    CnoError
        If there is no store, or its file is refused before SQLite opens it
        (a newer store is not damaged: the message says to update the program).
    """
    path = Path(root) / DB_NAME
    if not path.exists():
        raise CnoError(f"there is no store at {root}")
    check_file(path, SCHEMA_VERSION)  # empty, not SQLite, newer, truncated, lost WAL: its own precise line
    try:
        wal = sidecar(path, "-wal")
        if wal.exists() and wal.stat().st_size:
            connection = _connect(path, DEFAULT_BUSY_TIMEOUT, read_only=True)
        else:  # nothing outside the main file: read it without creating the WAL index files
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", isolation_level=None, uri=True)
        try:
            rows = connection.execute(f"PRAGMA integrity_check({int(limit)})").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        return [" ".join(str(exc).split())]
    return [" ".join(r[0].split()) for r in rows if r[0] != "ok"]


def _cannot_write(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite failed because the location cannot be written (full, read-only)."""
    text = str(exc).lower()
    return any(word in text for word in ("readonly", "read-only", "disk", "full", "unable to open"))


def _connect(path: Path, busy_timeout: float, read_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode with rows as :class:`sqlite3.Row`.

    Read-only: ``mode=ro``, and ``immutable=1`` where even that cannot work
    (read-only media without the WAL index files).
    """
    if not read_only:
        connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    else:
        uri = path.resolve().as_uri()
        connection = sqlite3.connect(f"{uri}?mode=ro", timeout=busy_timeout, isolation_level=None, uri=True)
        try:
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            connection.close()
            connection = sqlite3.connect(f"{uri}?immutable=1", isolation_level=None, uri=True)
    connection.row_factory = sqlite3.Row
    return connection


def _create(path: Path) -> None:
    """Create a new store file whole: built aside with its schema, then linked into place.

    If another program creates the store at the same moment, its file is kept
    and this one discarded; nobody ever sees a half-made or empty store.
    """
    temporary = path.with_name(f".{path.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        connection = sqlite3.connect(temporary, isolation_level=None)
        try:
            # No file system flush per migration step: the file is nobody's until it is linked
            # into place, and it is flushed once, whole, before that (one flush instead of one
            # per step; a crash before the link leaves only a stray temporary file).
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("PRAGMA journal_mode=WAL")
            migrate(connection, MIGRATIONS)
        finally:
            connection.close()  # copies the write-ahead log into the file and deletes it
        _flush_to_disk(temporary)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        for leftover in (temporary, sidecar(temporary, "-wal"), sidecar(temporary, "-shm")):
            leftover.unlink(missing_ok=True)


def _flush_to_disk(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class PgStore(Store):
    """The study store on a PostgreSQL server (``--store postgresql://...``), shared by several programs.

    The same queries and schema as the SQLite store (one migration history);
    who may see and change what is decided by the server from the login role
    (see :func:`cno_annotate.store.postgres.access_rules`). ``root`` is the
    server URL without its password.
    """

    def __init__(self, url: str, connection: postgres.PgConnection, read_only: bool = False,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT):
        self.url = url
        self.root = postgres.shown_url(url)  # type: ignore[assignment]
        self.pg = connection
        self.db = connection  # type: ignore[assignment]  # runs the same SQL as sqlite3.Connection
        self.read_only = read_only
        self._busy_timeout = busy_timeout
        self._wal = None

    @classmethod
    def connect(cls, url: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, read_only: bool = False) -> PgStore:
        """Connect, set the lock wait, and migrate (the owner) or check the schema version (everyone else).

        Raises
        ------
        CnoError
            If the server cannot be reached or refuses the login, or the schema is
            newer than this program or older and this login cannot upgrade it.
        """
        shown = postgres.shown_url(url)
        try:
            connection = postgres.PgConnection(url)
        except Exception as exc:
            if not postgres.is_database_error(exc):
                raise
            raise CnoError(f"cannot open the store at {shown}: {' '.join(str(exc).split())}") from None
        store = cls(url, connection, read_only, busy_timeout)
        try:
            store._prepare_server()
        except BaseException:
            connection.close()
            raise
        connection.server_edits = True  # the schema is this program's: cno_edit_read is there (migration 19)
        return store

    def _prepare_server(self) -> None:
        self.db.execute(f"SET lock_timeout = '{int(self._busy_timeout * 1000)}ms'")
        version = postgres.schema_version(self.pg)
        if version > SCHEMA_VERSION:
            raise CnoError(f"the store at {self.root} is from a newer cno-annotate (schema {version}, this program "
                           f"knows {SCHEMA_VERSION}); update cno-annotate")
        if version == SCHEMA_VERSION:
            return
        if self.read_only:
            raise CnoError(f"the store at {self.root} needs an upgrade (schema {version}); open it once read-write")
        try:
            postgres.migrate(self.pg, MIGRATIONS, _run_pg_step)
        except Exception as exc:
            if not postgres.is_permission_error(exc):
                raise
            raise CnoError(f"the store at {self.root} needs an upgrade (schema {version} of {SCHEMA_VERSION}) that "
                           f"only its owner may make: ask the coordinator to open it once") from None

    @property
    def folder(self) -> Path | None:
        """None: the store lives on a server."""
        return None

    def study_uids(self) -> set[str]:
        """The UIDs of the studies this login may see; a reader or adjudicator: those of their worklist's cases.

        Readers select nothing of the studies table (migration 26): their cases' UIDs come from ``rs_cases_seen``.
        """
        if postgres.limited_login(self.pg) is None:
            return super().study_uids()
        return {r[0] for r in self.db.execute("SELECT study_uid FROM rs_cases_seen")}

    def series_of_studies(self) -> dict[str, set[str]]:
        """As :meth:`Store.series_of_studies`; none for a reader or adjudicator (no volumes table, migration 26)."""
        if postgres.limited_login(self.pg) is None:
            return super().series_of_studies()
        return {}

    @property
    def cache_dir(self) -> Path:
        """A per-user temporary folder, one per server database."""
        return _user_cache(str(self.root))

    @property
    def schema_version(self) -> int:
        """The schema version of the database."""
        return postgres.schema_version(self.pg)

    @contextmanager
    def deferred_flush(self) -> Iterator[None]:
        """On the server every commit stays synchronous (the server's own setting decides)."""
        yield

    @contextmanager
    def transaction(self):
        """A write transaction on the server: all or nothing.

        Raises
        ------
        StoreWriteError
            If the server cannot be reached, the session was ended, a lock wait
            timed out, or two transactions deadlocked; nothing was applied.
        """
        with self._refusals_explained():
            with self.pg.transaction() as db:
                yield db

    @property
    def name(self) -> str:
        """The server and database, for messages (:attr:`root` keeps the connection options to reopen it)."""
        return postgres.plain_name(str(self.root))

    @contextmanager
    def single_statement(self):
        """One write statement, run alone (autocommit: the statement is its own transaction, one round trip).

        Raises
        ------
        StoreWriteError
            As :meth:`transaction`.
        """
        with self._refusals_explained():
            self.pg.reconnect_if_lost()
            try:
                yield self.pg
            except Exception as exc:
                if postgres.is_operational(exc) and getattr(exc, "sqlstate", None) is None:
                    # No answer at all: the server may have applied the statement before the connection went.
                    raise StoreWriteError(f"your change may have been saved: reopen the read to see (the store at "
                                          f"{self.name} did not confirm it: {_first_line(exc)})", str(exc)) from None
                raise

    @contextmanager
    def _refusals_explained(self):
        """A lost server, a lock wait given up or a deadlock as :class:`StoreWriteError`; nothing was applied."""
        if self.read_only:
            raise StoreWriteError(f"the store at {self.name} is open read-only; nothing was changed", "read-only")
        try:
            yield
        except Exception as exc:
            if postgres.is_retryable(exc):
                raise StoreWriteError(f"the store at {self.name} refused the change because another program changed "
                                      f"the same data at once ({_first_line(exc)}); nothing was changed",
                                      str(exc)) from None
            if not postgres.is_operational(exc):
                raise
            raise StoreWriteError(f"the store at {self.name} could not be written ({_first_line(exc)}); nothing "
                                  f"was changed", str(exc)) from None

    def close(self) -> None:
        """Close the server session."""
        self.db.close()


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__


def _run_pg_step(connection: postgres.PgConnection, step: Step | ByDialect) -> None:
    """Apply one step of the shared migration history on PostgreSQL."""
    if isinstance(step, ByDialect):
        step.postgresql(connection)
    elif callable(step):
        step(connection)  # type: ignore[arg-type]
    elif step.strip():
        connection.script(postgres.pg_ddl(step))

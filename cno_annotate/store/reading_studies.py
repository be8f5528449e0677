"""Reading studies in the store: settings, cases, registered readers and worklists, as typed rows.

:mod:`cno_annotate.reading_study` holds the rules (codes, seeded orders,
blinding, the audit); this module only reads and writes the tables. Writes run
inside the caller's transaction. On a server store a reader sees only the rows
the access rules give them (their own worklist and its cases).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any


class ReadingDesign(StrEnum):
    """How the timepoints of one patient are read in a reading study."""

    UNPAIRED_BLINDED = "unpaired-blinded"  # each timepoint a separate case, random order, no prior shown
    PAIRED_CHRONOLOGICAL = "paired-chronological"  # the prior shown beside the current visit, order known
    PAIRED_HIDDEN_ORDER = "paired-hidden-order"  # both visits shown as A and B; which is earlier is hidden

    @property
    def label(self) -> str:
        """How reports and ``reading-study show`` name the design."""
        return DESIGN_LABELS[self]

    @property
    def paired(self) -> bool:
        """Whether a patient's other visit is shown beside a case."""
        return self != ReadingDesign.UNPAIRED_BLINDED


DESIGN_LABELS = {
    ReadingDesign.UNPAIRED_BLINDED: "unpaired blinded (each timepoint a separate case in random order; no prior "
                                    "shown)",
    ReadingDesign.PAIRED_CHRONOLOGICAL: "paired chronological (the prior visit shown beside the current one; "
                                        "order known)",
    ReadingDesign.PAIRED_HIDDEN_ORDER: "paired with hidden order (both visits shown as A and B; which is earlier "
                                       "is hidden)",
}


@dataclass(frozen=True)
class ReadingStudy:
    """The settings of a reading study."""

    name: str
    scheme_id: str
    scheme_version: str
    seed: int
    show_age_sex: bool
    reveal_timepoints: bool
    design: ReadingDesign
    show_timer: bool  # whether readers see their active reading time in the viewer
    idle_seconds: float  # input-free time after which the reading timer pauses


@dataclass(frozen=True)
class Case:
    """A study of the store as a case of a reading study: its reading code, patient code and timepoint."""

    reading_study: str
    reading_code: str
    study_uid: str
    patient_code: str
    timepoint: int


@dataclass(frozen=True)
class Registration:
    """A reader registered in a reading study, with their role (``reader`` or ``adjudicator``)."""

    reader: str
    role: str


@dataclass(frozen=True)
class WorklistEntry:
    """A case at its position in a reader's worklist."""

    position: int
    reading_code: str
    study_uid: str


# -- settings -------------------------------------------------------------------------------------
def study(db: sqlite3.Connection, name: str) -> ReadingStudy | None:
    """The settings of the reading study ``name`` (None if there is none)."""
    row = db.execute("SELECT * FROM reading_studies WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    return ReadingStudy(row["name"], row["scheme_id"], row["scheme_version"], row["seed"],
                        bool(row["show_age_sex"]), bool(row["reveal_timepoints"]), ReadingDesign(row["design"]),
                        bool(row["show_timer"]), float(row["idle_seconds"]))


def exists(db: sqlite3.Connection, name: str) -> bool:
    """Whether a reading study of this name exists."""
    return db.execute("SELECT 1 FROM reading_studies WHERE name = ?", (name,)).fetchone() is not None


def names(db: sqlite3.Connection) -> list[str]:
    """The names of the reading studies, sorted."""
    return [r["name"] for r in db.execute("SELECT name FROM reading_studies ORDER BY name").fetchall()]


def add(db: sqlite3.Connection, settings: ReadingStudy, created: str, created_by: str) -> None:
    """Create a reading study with these settings."""
    db.execute("INSERT INTO reading_studies (name, scheme_id, scheme_version, seed, show_age_sex, "
               "reveal_timepoints, created, created_by, design, show_timer, idle_seconds) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (settings.name, settings.scheme_id, settings.scheme_version, settings.seed,
                int(settings.show_age_sex), int(settings.reveal_timepoints), created, created_by,
                settings.design.value, int(settings.show_timer), float(settings.idle_seconds)))


def set_design(db: sqlite3.Connection, name: str, design: ReadingDesign) -> None:
    """Change a study's design (the database refuses it once a read of the study exists)."""
    db.execute("UPDATE reading_studies SET design = ? WHERE name = ?", (design.value, name))


def has_reads(db: sqlite3.Connection, name: str) -> bool:
    """Whether any read (draft or submitted) belongs to the study."""
    return db.execute("SELECT 1 FROM reads WHERE reading_study = ? LIMIT 1", (name,)).fetchone() is not None


# -- cases ----------------------------------------------------------------------------------------
#: Read through the view rs_cases_seen (migration 21): on a server a reader sees the patient code and
#: timepoint only as the study's design allows (None otherwise); an SQLite store's view is the table.
_CASE_COLUMNS = "reading_study, reading_code, study_uid, patient_code, timepoint"


def _case(row) -> Case:
    return Case(row["reading_study"], row["reading_code"], row["study_uid"], row["patient_code"], row["timepoint"])


def cases(db: sqlite3.Connection, name: str) -> list[Case]:
    """The cases of a study, by reading code."""
    return [_case(r) for r in db.execute(
        f"SELECT {_CASE_COLUMNS} FROM rs_cases_seen WHERE reading_study = ? ORDER BY reading_code", (name,)).fetchall()]


def case_sources(db: Any) -> dict[tuple[str, str], str]:
    """(reading study, case key) -> source study UID, for every case whose readers name it by a stand-in.

    On a server a reader's or adjudicator's login names a case by its key (the stand-in study UID the study PACS
    holds it under, from the reading study's UID pairs), never by the source UID: their reads and openings are
    keyed so. The coordinator's login maps them back with this; any other login gets nothing (its view of the
    cases shows the key as the study UID).
    """
    rows = db.execute("SELECT reading_study, case_key, study_uid FROM rs_cases_seen WHERE case_key IS NOT NULL "
                      "AND case_key <> study_uid").fetchall()
    return {(r["reading_study"], r["case_key"]): r["study_uid"] for r in rows}


def case_key(db: Any, name: str, reader: str, study_uid: str) -> str:
    """The UID a read (or an opening) of ``reader`` in reading study ``name`` names the case of ``study_uid`` by.

    On a server, for a reader registered in the study, the case's key (their login sees the read: never the
    source UID); ``study_uid`` otherwise (an SQLite store, an unregistered reader, a key already).
    """
    if getattr(db, "dialect", "sqlite") == "sqlite":
        return study_uid
    if not hasattr(db, "cno_limited_login"):  # a login's groups do not change while it is connected: asked once
        from cno_annotate.store.postgres import limited_login

        db.cno_limited_login = limited_login(db)
    if db.cno_limited_login is not None:
        return study_uid  # a reader's or adjudicator's login knows its cases by their keys only
    row = db.execute("SELECT c.case_key FROM rs_cases_seen c JOIN rs_readers x ON x.reading_study = c.reading_study "
                     "WHERE c.reading_study = ? AND x.reader = ? AND c.study_uid = ? AND c.case_key IS NOT NULL",
                     (name, reader, study_uid)).fetchone()
    return study_uid if row is None else str(row[0])


def case(db: sqlite3.Connection, name: str, code: str) -> Case | None:
    """The case with this reading code (None if the study has none)."""
    row = db.execute(f"SELECT {_CASE_COLUMNS} FROM rs_cases_seen WHERE reading_study = ? AND reading_code = ?",
                     (name, code)).fetchone()
    return None if row is None else _case(row)


def patient_cases(db: sqlite3.Connection, name: str, patient_code: str) -> list[Case]:
    """The cases of one patient of the study, by reading code."""
    return [_case(r) for r in db.execute(
        f"SELECT {_CASE_COLUMNS} FROM rs_cases_seen WHERE reading_study = ? AND patient_code = ? "
        "ORDER BY reading_code",
        (name, patient_code)).fetchall()]


def one_patient(db: sqlite3.Connection, study_a: str, study_b: str) -> bool:
    """Whether a reading study holds both studies as cases of one patient code.

    A reading package's copies carry their reading code as patient ID, so only its reading study
    says which cases are one child's visits (a patient code the login may not see is NULL: no match).
    """
    return db.execute(
        "SELECT 1 FROM rs_cases_seen a JOIN rs_cases_seen b ON b.reading_study = a.reading_study "
        "AND b.patient_code = a.patient_code WHERE a.study_uid = ? AND b.study_uid = ? LIMIT 1",
        (study_a, study_b)).fetchone() is not None


def add_case(db: sqlite3.Connection, new: Case) -> None:
    """Add a case."""
    db.execute("INSERT INTO rs_cases (reading_study, reading_code, study_uid, patient_code, timepoint) "
               "VALUES (?,?,?,?,?)", (new.reading_study, new.reading_code, new.study_uid, new.patient_code,
                                      new.timepoint))


def number_case(db: sqlite3.Connection, name: str, study_uid: str, patient_code: str, timepoint: int) -> None:
    """Set the patient code and timepoint of the case of ``study_uid``."""
    db.execute("UPDATE rs_cases SET patient_code = ?, timepoint = ? WHERE reading_study = ? AND study_uid = ?",
               (patient_code, timepoint, name, study_uid))


# -- readers and worklists ------------------------------------------------------------------------
def readers(db: sqlite3.Connection, name: str) -> list[Registration]:
    """The readers and adjudicators registered in the study, by id."""
    return [Registration(r["reader"], r["role"]) for r in db.execute(
        "SELECT reader, role FROM rs_readers WHERE reading_study = ? ORDER BY reader", (name,)).fetchall()]


def role(db: sqlite3.Connection, name: str, reader: str) -> str | None:
    """A reader's role in the study (None if they are not registered)."""
    row = db.execute("SELECT role FROM rs_readers WHERE reading_study = ? AND reader = ?", (name, reader)).fetchone()
    return None if row is None else row["role"]


def in_any_study(db: sqlite3.Connection, reader: str, role: str) -> bool:
    """Whether a person is registered with this role in any reading study of the store."""
    return db.execute("SELECT 1 FROM rs_readers WHERE reader = ? AND role = ? LIMIT 1", (reader, role)).fetchone() \
        is not None


def add_reader(db: sqlite3.Connection, name: str, reader: str, role: str) -> None:
    """Register a reader who is not registered yet."""
    db.execute("INSERT INTO rs_readers (reading_study, reader, role) VALUES (?,?,?)", (name, reader, role))


def set_reader(db: sqlite3.Connection, name: str, reader: str, role: str) -> None:
    """Register a reader, or change the role of a registered one."""
    db.execute("INSERT OR REPLACE INTO rs_readers (reading_study, reader, role) VALUES (?,?,?)", (name, reader, role))


def has_worklists(db: sqlite3.Connection, name: str) -> bool:
    """Whether worklists were assigned in the study."""
    return db.execute("SELECT 1 FROM rs_worklists WHERE reading_study = ? LIMIT 1", (name,)).fetchone() is not None


def replace_worklists(db: sqlite3.Connection, name: str, worklists: dict[str, list[str]]) -> None:
    """Replace every worklist of the study: reader -> reading codes in their order (positions from 1).

    A case that stays on a reader's worklist keeps its row (moved to its new
    position), so what belongs to it (the reader's opened record) stays; only
    the cases taken off a worklist are deleted from it.
    """
    wanted = {(reader, code): n for reader, order in worklists.items() for n, code in enumerate(order, start=1)}
    held = {(r["reader"], r["reading_code"]) for r in db.execute(
        "SELECT reader, reading_code FROM rs_worklists WHERE reading_study = ?", (name,)).fetchall()}
    db.executemany("DELETE FROM rs_worklists WHERE reading_study = ? AND reader = ? AND reading_code = ?",
                   [(name, reader, code) for reader, code in sorted(held - set(wanted))])
    # out of the way first (positions are unique per reader), then each to its place
    db.execute("UPDATE rs_worklists SET position = -position WHERE reading_study = ?", (name,))
    db.executemany("UPDATE rs_worklists SET position = ? WHERE reading_study = ? AND reader = ? AND reading_code = ?",
                   [(n, name, reader, code) for (reader, code), n in wanted.items() if (reader, code) in held])
    db.executemany("INSERT INTO rs_worklists (reading_study, reader, position, reading_code) VALUES (?,?,?,?)",
                   [(name, reader, n, code) for (reader, code), n in wanted.items() if (reader, code) not in held])


def remove_from_worklist(db: sqlite3.Connection, name: str, reader: str, code: str) -> None:
    """Take a case off a reader's worklist, the others closing up in their order (the database forgets the
    reader's opened record of the case)."""
    db.execute("DELETE FROM rs_worklists WHERE reading_study = ? AND reader = ? AND reading_code = ?",
               (name, reader, code))
    order = [r["reading_code"] for r in db.execute(
        "SELECT reading_code FROM rs_worklists WHERE reading_study = ? AND reader = ? ORDER BY position",
        (name, reader)).fetchall()]
    db.execute("UPDATE rs_worklists SET position = -position WHERE reading_study = ? AND reader = ?", (name, reader))
    db.executemany("UPDATE rs_worklists SET position = ? WHERE reading_study = ? AND reader = ? AND reading_code = ?",
                   [(n, name, reader, c) for n, c in enumerate(order, start=1)])


def append_to_worklist(db: sqlite3.Connection, name: str, reader: str, code: str) -> int:
    """Add a case at the end of a reader's worklist; its position."""
    row = db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM rs_worklists WHERE reading_study = ? AND reader = ?",
                     (name, reader)).fetchone()
    position = int(row[0])
    add_worklist(db, name, reader, [(position, code)])
    return position


def add_worklist(db: sqlite3.Connection, name: str, reader: str, entries: Iterable[tuple[int, str]]) -> None:
    """Add (position, reading code) entries to a reader's worklist."""
    db.executemany("INSERT INTO rs_worklists (reading_study, reader, position, reading_code) VALUES (?,?,?,?)",
                   [(name, reader, position, code) for position, code in entries])


def worklist(db: sqlite3.Connection, name: str, reader: str) -> list[WorklistEntry]:
    """A reader's worklist in its order (empty before one is assigned)."""
    rows = db.execute(
        "SELECT w.position, w.reading_code, c.study_uid FROM rs_worklists w JOIN rs_cases_seen c "
        "ON c.reading_study = w.reading_study AND c.reading_code = w.reading_code "
        "WHERE w.reading_study = ? AND w.reader = ? ORDER BY w.position", (name, reader)).fetchall()
    return [WorklistEntry(r["position"], r["reading_code"], r["study_uid"]) for r in rows]


def record_opened(db: Any, name: str, reader: str, study_uid: str, at: str) -> float:
    """Record that a reader opened a case (kept from the first opening); the time recorded looking at it so far.

    On a server the opening names the case by its key (:func:`case_key`), as the reader's reads do.
    """
    study_uid = case_key(db, name, reader, study_uid)
    row = db.execute("INSERT INTO rs_opened (reading_study, reader, study_uid, opened) VALUES (?,?,?,?) "
                     "ON CONFLICT (reading_study, reader, study_uid) DO UPDATE SET opened = rs_opened.opened "
                     "RETURNING looked_seconds", (name, reader, study_uid, at)).fetchone()
    return float(row[0])


def add_looked_time(db: Any, name: str, reader: str, study_uid: str, seconds: float, at: str) -> float:
    """Add active time spent looking at an opened case (one statement); the case's looked-only time after."""
    study_uid = case_key(db, name, reader, study_uid)
    row = db.execute("INSERT INTO rs_opened (reading_study, reader, study_uid, opened, looked_seconds) "
                     "VALUES (?,?,?,?,?) ON CONFLICT (reading_study, reader, study_uid) DO UPDATE "
                     "SET looked_seconds = rs_opened.looked_seconds + excluded.looked_seconds "
                     "RETURNING looked_seconds", (name, reader, study_uid, at, float(seconds))).fetchone()
    return float(row[0])


def opened(db: Any, name: str, reader: str) -> dict[str, float]:
    """The cases of a reader's worklist they opened in a study: study UID -> active seconds spent only looking.

    An opening keyed by the case's key (a server reader's) is given under the study UID this login knows the case
    by (the coordinator's: the source UID).
    """
    rows = db.execute("SELECT c.study_uid, o.looked_seconds FROM rs_opened o JOIN rs_cases_seen c "
                      "ON c.reading_study = o.reading_study AND o.study_uid IN (c.study_uid, c.case_key) "
                      "JOIN rs_worklists w "
                      "ON w.reading_study = o.reading_study AND w.reader = o.reader AND w.reading_code = c.reading_code "
                      "WHERE o.reading_study = ? AND o.reader = ?", (name, reader)).fetchall()
    return {r["study_uid"]: float(r["looked_seconds"]) for r in rows}


def opening_refused(exc: BaseException) -> bool:
    """Whether the database refused to record an opening or time looked: the case is not on the reader's worklist.

    SQLite's trigger and a coordinator's on a server raise an integrity error; a reader's row security on a server
    refuses the row as not theirs to write.
    """
    from cno_annotate.store import postgres

    return isinstance(exc, sqlite3.IntegrityError) or postgres.is_integrity_error(exc) \
        or postgres.is_privilege_error(exc)


@dataclass(frozen=True)
class OpenedCase:
    """A case a reader opened: when first, and the active seconds spent only looking at it (no change)."""

    study_uid: str
    opened: str
    looked_seconds: float


def opened_cases(db: Any, name: str, reader: str) -> list[OpenedCase]:
    """The cases a reader opened in a study, with when and how long they looked, by study UID (as this login knows
    the case: the coordinator's the source UID of an opening a server reader keyed by the case's key)."""
    rows = db.execute("SELECT COALESCE(c.study_uid, o.study_uid) AS study_uid, o.opened, o.looked_seconds "
                      "FROM rs_opened o LEFT JOIN rs_cases_seen c ON c.reading_study = o.reading_study "
                      "AND o.study_uid IN (c.study_uid, c.case_key) WHERE o.reading_study = ? AND o.reader = ? "
                      "ORDER BY 1", (name, reader)).fetchall()
    return [OpenedCase(r["study_uid"], r["opened"], float(r["looked_seconds"])) for r in rows]


def age_and_sex(db: Any, reading_study: str, code: str) -> tuple[str | None, float | None] | None:
    """Sex and age at the visit (years, 1 decimal) of a case of a study that shows them; None if not shown or no case.

    On a server a reader's login may not select the imaging tables (migration 26): the server answers through
    ``cno_case_age_sex`` (migration 32, run as the owner) with these two values only, and only for a case of the
    caller's worklist (a coordinator's: any case).
    """
    from cno_annotate.store import postgres

    if getattr(db, "dialect", "sqlite") == postgres.DIALECT:
        row = db.execute("SELECT sex, age_years FROM cno_case_age_sex(?, ?)", (reading_study, code)).fetchone()
        return None if row is None else (row[0], None if row[1] is None else float(row[1]))
    row = db.execute(
        "SELECT p.sex, p.birth_date, s.study_date FROM rs_cases c "
        "JOIN reading_studies r ON r.name = c.reading_study AND r.show_age_sex <> 0 "
        "JOIN studies s ON s.study_uid = c.study_uid JOIN patients p ON p.patient_key = s.patient_key "
        "WHERE c.reading_study = ? AND c.reading_code = ?", (reading_study, code)).fetchone()
    return None if row is None else (row[0] or None, age_years(row[1], row[2]))


def age_years(birth: str | None, at: str | None) -> float | None:
    """Age in years (1 decimal) on DICOM date ``at`` of someone born on ``birth`` (YYYYMMDD); None if unknown."""
    if not birth or not at:
        return None
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        then = date(int(at[:4]), int(at[4:6]), int(at[6:8]))
    except (ValueError, TypeError, IndexError):
        return None
    return round((then - born).days / 365.25, 1)

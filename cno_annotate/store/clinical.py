"""The coordinator's database: the link key and the clinical records, in their own SQLite file.

Kept apart from the study store (its path is always given explicitly, and
nothing reader-facing opens it). :mod:`cno_annotate.clinical` parses clinical
CSV files into :class:`Visit` rows and writes them here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cno_annotate.errors import CnoError
from cno_annotate.store.sqlite import migrate, transaction

MIGRATIONS = [
    """
    CREATE TABLE link_key (
        reading_study TEXT NOT NULL, reading_code TEXT NOT NULL, record_id TEXT NOT NULL,
        PRIMARY KEY (reading_study, reading_code)
    );
    CREATE TABLE visits (
        record_id TEXT NOT NULL, visit_date TEXT NOT NULL, sex TEXT, age_at_onset REAL,
        age_at_diagnosis REAL, crp_mg_l REAL, esr_mm_h REAL,
        PRIMARY KEY (record_id, visit_date)
    );
    CREATE TABLE painful_sites (
        record_id TEXT NOT NULL, visit_date TEXT NOT NULL, site_id TEXT NOT NULL, side TEXT,
        FOREIGN KEY (record_id, visit_date) REFERENCES visits (record_id, visit_date) ON DELETE CASCADE
    );
    CREATE TABLE treatments (
        record_id TEXT NOT NULL, visit_date TEXT NOT NULL, treatment TEXT NOT NULL, start TEXT, stop TEXT,
        FOREIGN KEY (record_id, visit_date) REFERENCES visits (record_id, visit_date) ON DELETE CASCADE
    );
    """,
]


@dataclass(frozen=True)
class PainfulSite:
    """A painful site at a visit: a site or clinical region id of the taxonomy, and its side (R, L or None)."""

    site_id: str
    side: str | None


@dataclass(frozen=True)
class Treatment:
    """A treatment at a visit: its category and ISO start and stop dates (each may be unknown)."""

    treatment: str
    start: str | None
    stop: str | None


@dataclass(frozen=True)
class Visit:
    """One clinical visit of a record (ISO visit date; ages in years, CRP in mg/L, ESR in mm/h)."""

    record_id: str
    visit_date: str
    sex: str | None
    age_at_onset: float | None
    age_at_diagnosis: float | None
    crp_mg_l: float | None
    esr_mm_h: float | None
    painful_sites: tuple[PainfulSite, ...] = ()
    treatments: tuple[Treatment, ...] = ()

    def as_dict(self) -> dict:
        """The visit as the unblinded document and the cohort analysis read it."""
        return {"record_id": self.record_id, "visit_date": self.visit_date, "sex": self.sex,
                "age_at_onset": self.age_at_onset, "age_at_diagnosis": self.age_at_diagnosis,
                "crp_mg_l": self.crp_mg_l, "esr_mm_h": self.esr_mm_h,
                "painful_sites": [{"site_id": s.site_id, "side": s.side} for s in self.painful_sites],
                "treatments": [{"treatment": t.treatment, "start": t.start, "stop": t.stop} for t in self.treatments]}


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the coordinator database file at ``path``.

    Raises
    ------
    CnoError
        If the file is not such a database, or was written by a newer program.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys=ON")
        before, _ = migrate(connection, MIGRATIONS)
        if before > len(MIGRATIONS):
            raise CnoError(f"{path} was written by a newer cno-annotate: update it")
    except sqlite3.DatabaseError as exc:
        raise CnoError(f"{path} is not a cno-annotate link key: {exc}") from None
    return connection


# -- link key -----------------------------------------------------------------------------
def put_links(db: sqlite3.Connection, reading_study: str, links: dict[str, str], replace: bool) -> None:
    """Set reading code -> record id links, all or none (the record ids are checked by the caller).

    Raises
    ------
    CnoError
        Without ``replace``, if a code is already linked to another record (nothing is written).
    """
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    with transaction(db):
        for code, record in links.items():
            db.execute(f"{verb} INTO link_key VALUES (?,?,?)", (reading_study, code, record))
            stored = db.execute("SELECT record_id FROM link_key WHERE reading_study = ? AND reading_code = ?",
                                (reading_study, code)).fetchone()["record_id"]
            if stored != record:
                raise CnoError(f"{code} in {reading_study} is already linked to record {stored}; "
                               f"use --replace to link it to {record}")


def links(db: sqlite3.Connection, reading_study: str) -> dict[str, str]:
    """Reading code -> record id for a reading study."""
    return {r["reading_code"]: r["record_id"] for r in db.execute(
        "SELECT reading_code, record_id FROM link_key WHERE reading_study = ?", (reading_study,))}


# -- clinical records ---------------------------------------------------------------------
def visits(db: sqlite3.Connection, record_id: str) -> list[Visit]:
    """Every visit of a record by date, with its painful sites and treatments."""
    out = []
    for row in db.execute("SELECT * FROM visits WHERE record_id = ? ORDER BY visit_date", (record_id,)).fetchall():
        key = (record_id, row["visit_date"])
        sites = tuple(PainfulSite(r["site_id"], r["side"]) for r in db.execute(
            "SELECT site_id, side FROM painful_sites WHERE record_id = ? AND visit_date = ?", key))
        treatments = tuple(Treatment(r["treatment"], r["start"], r["stop"]) for r in db.execute(
            "SELECT treatment, start, stop FROM treatments WHERE record_id = ? AND visit_date = ?", key))
        out.append(Visit(row["record_id"], row["visit_date"], row["sex"], row["age_at_onset"],
                         row["age_at_diagnosis"], row["crp_mg_l"], row["esr_mm_h"], sites, treatments))
    return out


def has_visit(db: sqlite3.Connection, record_id: str, visit_date: str) -> bool:
    """Whether a visit of this record on this date is imported."""
    return db.execute("SELECT 1 FROM visits WHERE record_id = ? AND visit_date = ?",
                      (record_id, visit_date)).fetchone() is not None


def put_visits(db: sqlite3.Connection, new: list[Visit]) -> None:
    """Write visits, each replacing an imported visit of its record and date; all or nothing."""
    with transaction(db):
        for v in new:
            db.execute("DELETE FROM visits WHERE record_id = ? AND visit_date = ?", (v.record_id, v.visit_date))
            db.execute("INSERT INTO visits VALUES (?,?,?,?,?,?,?)",
                       (v.record_id, v.visit_date, v.sex, v.age_at_onset, v.age_at_diagnosis, v.crp_mg_l, v.esr_mm_h))
            db.executemany("INSERT INTO painful_sites VALUES (?,?,?,?)",
                           [(v.record_id, v.visit_date, s.site_id, s.side) for s in v.painful_sites])
            db.executemany("INSERT INTO treatments VALUES (?,?,?,?,?)",
                           [(v.record_id, v.visit_date, t.treatment, t.start, t.stop) for t in v.treatments])

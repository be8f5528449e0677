"""Clinical linkage, kept apart from the reads: the coordinator's database.

The link key (reading code <-> clinical record id) and the clinical records
live in their own SQLite file, whose path is always given explicitly
(``--link-key FILE``); nothing reader-facing reads it. Clinical records come
from CSV: one row per record and visit, painful sites mapped to the site
taxonomy, treatments with dates, CRP and ESR. A file with any bad row is
refused whole, with every bad line listed.
"""

from __future__ import annotations

import csv
import math
import re
import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cno_annotate.annotation.csv_export import FORMULA_START
from cno_annotate.annotation.taxonomy import Taxonomy, load_taxonomy
from cno_annotate.errors import CnoError
from cno_annotate.store import clinical as coordinator
from cno_annotate.store.sqlite import transaction

COLUMNS = ("record_id", "visit_date", "sex", "age_at_onset", "age_at_diagnosis", "painful_sites", "treatments",
           "crp_mg_l", "esr_mm_h")
TREATMENTS = {
    "nsaid": ("nsaid", "nsaids", "naproxen", "ibuprofen", "indomethacin"),
    "bisphosphonate": ("bisphosphonate", "bisphosphonates", "pamidronate", "zoledronate", "zoledronic acid"),
    "dmard": ("dmard", "dmards", "methotrexate", "sulfasalazine"),
    "tnf_blocker": ("tnf_blocker", "tnf-alpha blocker", "tnf blocker", "anti-tnf", "etanercept", "adalimumab",
                    "infliximab"),
    "other_biologic": ("other_biologic", "biologic", "anakinra", "tocilizumab", "secukinumab"),
    "corticosteroid": ("corticosteroid", "corticosteroids", "steroid", "prednisolone", "prednisone"),
}
_TREATMENT_OF = {alias: category for category, aliases in TREATMENTS.items() for alias in aliases}
_SIDE_WORDS = {"r": "R", "right": "R", "l": "L", "left": "L"}

class CoordinatorDB:
    """The link key and clinical records (open with :meth:`open`)."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self.db = connection

    @classmethod
    def open(cls, path: Path | str | None) -> CoordinatorDB:
        """Open (creating) the coordinator database at an explicit path.

        Raises
        ------
        CnoError
            Without a path, or if the file is not such a database.
        """
        if not path:
            raise CnoError("the link key's location must be given explicitly (--link-key FILE)")
        path = Path(path)
        connection = coordinator.connect(path)
        return cls(path, connection)

    def transaction(self):
        """A write transaction: all or nothing."""
        return transaction(self.db)

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    # -- link key -----------------------------------------------------------------------
    def link(self, reading_study: str, links: dict[str, str], replace: bool = True) -> None:
        """Set reading code -> record id links, all or none.

        Raises
        ------
        CnoError
            If a record id is empty or starts a spreadsheet formula, or (without ``replace``)
            a code is already linked to another record.
        """
        for record in links.values():
            check_record_id(record)
        coordinator.put_links(self.db, reading_study, links, replace)

    def links(self, reading_study: str) -> dict[str, str]:
        """Reading code -> record id for a reading study."""
        return coordinator.links(self.db, reading_study)

    # -- clinical records -----------------------------------------------------------------
    def visits(self, record_id: str) -> list[coordinator.Visit]:
        """Every visit of a record by date, with its painful sites and treatments."""
        return coordinator.visits(self.db, record_id)


@dataclass
class ClinicalRow:
    """One parsed CSV row."""

    line: int
    record_id: str
    visit_date: str
    sex: str | None
    age_at_onset: float | None
    age_at_diagnosis: float | None
    painful_sites: list[tuple[str, str | None]]
    treatments: list[tuple[str, str | None, str | None]]
    crp: float | None
    esr: float | None

    def visit(self) -> coordinator.Visit:
        """The row as the visit it records."""
        return coordinator.Visit(
            self.record_id, self.visit_date, self.sex, self.age_at_onset, self.age_at_diagnosis, self.crp, self.esr,
            tuple(coordinator.PainfulSite(site, side) for site, side in self.painful_sites),
            tuple(coordinator.Treatment(kind, start, stop) for kind, start, stop in self.treatments))


def parse_clinical_csv(path: Path, taxonomy: Taxonomy | None = None) -> list[ClinicalRow]:
    """Parse and check a clinical CSV; every problem is reported with its line.

    Raises
    ------
    CnoError
        Listing every bad line (or the missing columns), so the file can be fixed in one go.
    """
    taxonomy = taxonomy or load_taxonomy()
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CnoError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CnoError(f"{path}: cannot read ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise CnoError(f"{path}: missing column(s) {', '.join(missing)}; the columns are {', '.join(COLUMNS)}")
    rows: list[ClinicalRow] = []
    errors: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for line, raw in enumerate(reader, start=2):
        raw = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        try:
            row = _parse_row(line, raw, taxonomy)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        key = (row.record_id, row.visit_date)
        if key in seen:
            errors.append(f"line {line}: record {row.record_id} visit {row.visit_date} repeats line {seen[key]}")
            continue
        seen[key] = line
        rows.append(row)
    if errors:
        raise CnoError(f"{path}: {len(errors)} bad row(s), nothing imported:\n  " + "\n  ".join(errors))
    return rows


def check_record_id(record_id: str) -> str:
    """``record_id`` when it is not empty and starts no spreadsheet formula.

    Raises
    ------
    CnoError
        Otherwise, in one line.
    """
    if not record_id:
        raise CnoError("record_id is empty")
    if record_id.startswith(FORMULA_START):
        raise CnoError(f"record_id {record_id!r} starts with {record_id[0]!r}, which spreadsheets "
                       f"run as a formula; record ids start with a letter or digit")
    return record_id


def _parse_row(line: int, raw: dict, taxonomy: Taxonomy) -> ClinicalRow:
    try:
        check_record_id(raw["record_id"])
    except CnoError as exc:
        raise ValueError(str(exc)) from None
    sex = raw["sex"].upper() or None
    if sex not in (None, "F", "M"):
        raise ValueError(f"sex must be F or M, not {raw['sex']!r}")
    onset = _number(raw["age_at_onset"], "age_at_onset")
    diagnosis = _number(raw["age_at_diagnosis"], "age_at_diagnosis")
    if onset is not None and diagnosis is not None and onset > diagnosis:
        raise ValueError(f"age_at_onset {onset:g} is after age_at_diagnosis {diagnosis:g}")
    return ClinicalRow(
        line=line,
        record_id=raw["record_id"],
        visit_date=_required_date(raw["visit_date"], "visit_date"),
        sex=sex,
        age_at_onset=onset,
        age_at_diagnosis=diagnosis,
        painful_sites=[_site(part, taxonomy) for part in _parts(raw["painful_sites"])],
        treatments=[_treatment(part) for part in _parts(raw["treatments"])],
        crp=_number(raw["crp_mg_l"], "crp_mg_l"),
        esr=_number(raw["esr_mm_h"], "esr_mm_h"),
    )


def _parts(text: str) -> list[str]:
    return [p.strip() for p in text.split(";") if p.strip()]


def _date(text: str, column: str) -> str | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a date (YYYY-MM-DD)") from None


def _required_date(text: str, column: str) -> str:
    if not text:
        raise ValueError(f"{column} is empty")
    return _date(text, column) or ""


#: Plausible bounds of the numeric columns (inclusive): ages in years (a paediatric CNO cohort
#: followed into young adulthood), CRP in mg/L, ESR in mm/h. A value outside is a typing or unit error.
BOUNDS = {"age_at_onset": (0.0, 30.0), "age_at_diagnosis": (0.0, 30.0), "crp_mg_l": (0.0, 1000.0),
          "esr_mm_h": (0.0, 200.0)}


def _number(text: str, column: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{column} {text!r} is not a finite number")
    if value < 0:
        raise ValueError(f"{column} {text!r} is negative")
    low, high = BOUNDS[column]
    if not low <= value <= high:
        raise ValueError(f"{column} {text!r} is outside {low:g}-{high:g}, the plausible range")
    return value


def _site(text: str, taxonomy: Taxonomy) -> tuple[str, str | None]:
    """``femur.distal:R``, ``Distal femur R``, ``T8``, ``knee left``, ``SI joint:L`` -> (site or region id, side).

    A painful site is a bone site of the taxonomy or one of its clinical
    regions (joints and body regions, each covering bone units).
    """
    name, side = text, None
    if ":" in text:
        name, _, side_text = text.rpartition(":")
        side = _SIDE_WORDS.get(side_text.strip().lower())
        if side is None:
            raise ValueError(f"painful site {text!r}: side must be R or L")
    else:
        words = text.split()
        if len(words) > 1 and words[-1].lower() in _SIDE_WORDS:
            name, side = " ".join(words[:-1]), _SIDE_WORDS[words[-1].lower()]
    place = _place(name.strip(), taxonomy)
    if place.lateral and side is None:
        raise ValueError(f"painful site {text!r}: {place.label} needs a side (R or L)")
    if not place.lateral and side is not None:
        raise ValueError(f"painful site {text!r}: {place.label} has no side")
    return place.id, side if place.lateral else None


def _place(name: str, taxonomy: Taxonomy):
    """The site or clinical region a name means (id, label, vertebra name or region alias)."""
    lowered = name.lower()
    if name in taxonomy.sites:
        return taxonomy.sites[name]
    if lowered in taxonomy.clinical_regions:
        return taxonomy.clinical_regions[lowered]
    exact = [s for s in taxonomy.sites.values()
             if lowered in (s.label.lower(), s.segment.lower() if s.bone == "vertebra" else "")]
    if len(exact) == 1:
        return exact[0]
    regions = [r for r in taxonomy.clinical_regions.values()
               if lowered in (r.label.lower(), *(a.lower() for a in r.aliases))]
    if len(regions) == 1:
        return regions[0]
    guesses = [s.id for s in taxonomy.search(name, limit=3)]
    guesses += [r.id for r in taxonomy.clinical_regions.values() if lowered and lowered in r.label.lower()][:2]
    raise ValueError(f"unknown site {name!r} (use a site or clinical region of the taxonomy, e.g. femur.distal, "
                     f"knee, SI joint; close: {', '.join(guesses) or 'none'})")


def _treatment(text: str) -> tuple[str, str | None, str | None]:
    """``bisphosphonate 2024-03-02..2024-09-01`` or ``nsaid 2024-01-10..`` -> (category, start, stop)."""
    match = re.fullmatch(r"(.+?)\s+(\d{4}-\d{2}-\d{2})?\s*\.\.\s*(\d{4}-\d{2}-\d{2})?", text)
    name, start, stop = (match.group(1), match.group(2), match.group(3)) if match else (text, None, None)
    category = _TREATMENT_OF.get(name.strip().lower())
    if category is None:
        raise ValueError(f"unknown treatment {name.strip()!r} (one of {', '.join(TREATMENTS)})")
    start, stop = _date(start or "", "treatment start"), _date(stop or "", "treatment stop")
    if start and stop and stop < start:
        raise ValueError(f"treatment {text!r} stops before it starts")
    return category, start, stop


def import_clinical(db: CoordinatorDB, path: Path, replace: bool = False) -> int:
    """Import a clinical CSV, all or nothing; returns the number of visits.

    Raises
    ------
    CnoError
        For any bad row, or visits already in the database (unless ``replace``).
    """
    rows = parse_clinical_csv(path)
    clashes = [r for r in rows if coordinator.has_visit(db.db, r.record_id, r.visit_date)]
    if clashes and not replace:
        first = clashes[0]
        raise CnoError(f"{path}: line {first.line}: record {first.record_id} visit {first.visit_date} is already "
                       f"imported (use --replace)")
    coordinator.put_visits(db.db, [r.visit() for r in rows])
    return len(rows)


def link_patient_ids(store, db: CoordinatorDB, reading_study: str) -> int:
    """Link every case of a reading study to its DICOM PatientID (the common case)."""
    from cno_annotate.reading_study import cases

    ids = {s.study_uid: s.patient_id for s in store.studies(count_missing=False)}
    links = {c.reading_code: ids[c.study_uid] for c in cases(store, reading_study) if ids.get(c.study_uid)}
    db.link(reading_study, links)
    return len(links)


def unblinded_document(store, db: CoordinatorDB, reading_study: str) -> dict:
    """Reads (latest versions) of every case joined with the clinical record (coordinator only)."""
    from cno_annotate import __version__
    from cno_annotate.annotation.documents import read_document
    from cno_annotate.annotation.reads import list_reads
    from cno_annotate.export_reads import load_for_export
    from cno_annotate.reading_study import cases

    links = db.links(reading_study)
    out = []
    for case in cases(store, reading_study):
        record = links.get(case.reading_code)
        rows = list_reads(store, study_uid=case.study_uid, reading_study=reading_study, latest_only=True)
        reads = [read_document(read) for read in load_for_export(store, [r["read_id"] for r in rows])]
        out.append({
            "reading_code": case.reading_code, "study_uid": case.study_uid,
            "patient_code": case.patient_code, "timepoint": case.timepoint,
            "record_id": record, "clinical": [v.as_dict() for v in db.visits(record)] if record else [], "reads": reads,
        })
    return {"generator": f"cno-annotate {__version__}", "reading_study": reading_study, "unblinded": True,
            "cases": out}


def write_unblinded(document: dict, folder: Path) -> list[Path]:
    """``unblinded.json``, ``reads.csv`` and ``lesions.csv`` (with record ids and clinical columns)."""
    from cno_annotate.annotation.csv_export import lesion_rows, read_rows, write_csv
    from cno_annotate.annotation.validation import dumps_strict
    from cno_annotate.fileio import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reads_doc = {"reads": [r for case in document["cases"] for r in case["reads"]]}
    by_study = {case["study_uid"]: case for case in document["cases"]}
    paths = [atomic_write_text(folder / "unblinded.json", dumps_strict(document) + "\n")]
    extra = ["reading_code", "record_id", "timepoint", "visit_date", "sex", "age_at_onset", "age_at_diagnosis",
             "crp_mg_l", "esr_mm_h", "painful_sites", "treatments"]
    for name, (columns, rows) in (("reads.csv", read_rows(reads_doc)), ("lesions.csv", lesion_rows(reads_doc))):
        for row in rows:
            case = by_study[row["study_uid"]]
            visit = case["clinical"][-1] if case["clinical"] else {}
            row.update({
                "reading_code": case["reading_code"], "record_id": case["record_id"] or "",
                "timepoint": case["timepoint"], "visit_date": visit.get("visit_date", ""),
                "sex": visit.get("sex") or "", "age_at_onset": _blank(visit.get("age_at_onset")),
                "age_at_diagnosis": _blank(visit.get("age_at_diagnosis")), "crp_mg_l": _blank(visit.get("crp_mg_l")),
                "esr_mm_h": _blank(visit.get("esr_mm_h")),
                "painful_sites": "; ".join(f"{s['site_id']}{':' + s['side'] if s['side'] else ''}"
                                           for s in visit.get("painful_sites", [])),
                "treatments": "; ".join(t["treatment"] for t in visit.get("treatments", [])),
            })
        paths.append(write_csv(folder / name, extra + [c for c in columns if c not in extra], rows))
    return paths


def _blank(value):
    return "" if value is None else value

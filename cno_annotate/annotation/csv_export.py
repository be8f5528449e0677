"""CSV tables for statistics (R, pandas, SPSS): one row per lesion, per scored bone unit, per read.

Built from the JSON export form (:func:`documents.export_document`), so the
exports always agree. Missing values are empty cells; "not assessable"
grades and scores are ``NA``. ``columns.csv`` says what every column holds.

Scores live in bone units: ``units.csv`` has each unit's score and
``reads.csv`` their sum. A lesion's ``lesion_item_sum_not_additive`` is the
sum of that lesion's own grades, for description only: several lesions in one
unit share it (the unit takes per item the highest lesion grade, and extent
is graded for the whole unit), so adding lesion values overstates the score.

Formula injection: a spreadsheet runs a cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return as a formula. Every CSV the tool
writes goes through :func:`safe_cell`, which (as OWASP recommends) prefixes
such text with a single quote. Numbers stay numbers: a value that is a number
(``-77.0``), or text that is exactly a decimal number (``-3``, ``+1.5e3``), is
written as it is, since a spreadsheet reads it as a number, not a formula.

Line breaks: a bare carriage return is not quoted by a writer whose line
terminator is ``\n``, and a spreadsheet starts a new row at it. So text
cells have every line break (CR LF, CR) written as LF, which the writer
always quotes, and each line inside a cell is neutralised like a cell start
(``"note\n=2"`` is written ``"note\n'=2"``).
"""

from __future__ import annotations

import csv
import io
import numbers
import re
from collections.abc import Iterable
from pathlib import Path

from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.errors import CnoError
from cno_annotate.fileio import atomic_write_text

#: Columns that say which read a row belongs to (every table starts with them).
READ_KEY_COLUMNS = [
    "read_id", "study_uid", "reader", "status", "reading_study", "reading_code", "role", "version", "supersedes",
    "scheme_id", "scheme_version",
]
LESION_COLUMNS = READ_KEY_COLUMNS + [
    "lesion_id", "tracking_uid",
    "site_id", "site_label", "site_code", "site_code_scheme", "bone_code", "region", "group",
    "subsite_id", "subsite_code", "side", "side_code", "unit_id",
    "x_mm", "y_mm", "z_mm", "series_uid", "voxel_i", "voxel_j", "voxel_k",
    "size_x_mm", "size_y_mm", "size_z_mm", "volume_ml", "lesion_item_sum_not_additive", "confidence", "comment",
    "stir_muscle_ratio",
]
UNIT_COLUMNS = READ_KEY_COLUMNS + ["unit_id", "unit_status", "unit_score"]
#: What the columns mean (written to columns.csv); grade_* columns are described by their scheme item.
COLUMN_MEANINGS = {
    "lesion_item_sum_not_additive": "Sum of this lesion's own graded items (NA: every graded item not assessable). "
                                    "NOT a score to add up: lesions in one bone unit share the unit's score "
                                    "(highest grade per item; extent graded for the whole unit). Use units.csv "
                                    "unit_score or reads.csv total.",
    "unit_id": "Bone unit (site unit and side, e.g. femur.distal:R) of the taxonomy the read names.",
    "unit_status": "lesion, no_lesion (marked) or not_assessable (marked, or its lesions give no assessable grade).",
    "unit_score": "The unit's score (sum of its item grades, capped at the scheme's unit maximum); NA when not "
                  "assessable. Unit scores add up to the read's total.",
    "total": "Sum of unit scores; units and items that are not assessable are left out (units_not_assessable).",
    "units_with_lesion": "Bone units holding a lesion with at least one assessable grade.",
    "complete": ("true when the total leaves out no not-assessable bone unit or item grade; false: the total "
                 "is flagged incomplete (it sums only what was assessable)."),
    "units_not_assessable": "Bone units marked not assessable or whose lesions are graded not assessable.",
    "side": "R or L for paired bones; empty for midline sites.",
    "x_mm": "Lesion position, patient LPS coordinates in mm (x: towards the patient's left).",
    "volume_ml": "Volume from the drawn extent (ml); empty without an extent.",
    "read_id": "Identifier of the read (one reader's reading of one study, one version).",
    "study_uid": "DICOM Study Instance UID of the MRI study read.",
    "reader": "Reader id as registered (pseudonymous).",
    "status": "draft (still being edited) or submitted (final for this version).",
    "reading_study": "Name of the blinded reading study the read belongs to; empty for a read outside one.",
    "reading_code": "The case's blinded code in that reading study (e.g. CNO-0001); empty outside one.",
    "role": "reader or adjudicator (the adjudicator's read is the consensus of a case).",
    "version": "Version of the read (1 first; a revision of a submitted read adds 1).",
    "supersedes": "read_id of the version this read revises; empty for version 1.",
    "scheme_id": "Grading scheme of the read.",
    "scheme_version": "Version of the grading scheme.",
    "started": "When the read was started (ISO 8601, UTC).",
    "submitted": "When the read was submitted (ISO 8601, UTC); empty for a draft.",
    "lesions": "Number of lesions marked in the read.",
    "units_no_lesion": "Bone units marked as holding no lesion.",
    "lesion_id": "Identifier of the lesion within its read.",
    "tracking_uid": "DICOM tracking UID of the lesion: the same lesion keeps it across edits, versions, exports "
                    "and follow-up visits (as the SR's tracking UID).",
    "site_id": "Anatomical site of the lesion (taxonomy id, e.g. femur.distal).",
    "site_label": "Readable name of the site.",
    "site_code": "Code of the site in the coding scheme named by site_code_scheme.",
    "site_code_scheme": "Coding scheme of site_code.",
    "bone_code": "Code of the whole bone the site belongs to.",
    "region": "Taxonomy region of the site.",
    "group": "Reporting group of the site.",
    "subsite_id": "Sub-site within the site (e.g. metaphysis); empty when not given.",
    "subsite_code": "Code of the sub-site; empty when not given.",
    "side_code": "Code of the side (laterality); empty for midline sites.",
    "y_mm": "Lesion position, patient LPS coordinates in mm (y: towards the patient's back).",
    "z_mm": "Lesion position, patient LPS coordinates in mm (z: towards the patient's head).",
    "series_uid": "DICOM Series Instance UID of the series the lesion was marked on.",
    "voxel_i": "Voxel column index of the lesion position in that series (0-based).",
    "voxel_j": "Voxel row index of the lesion position in that series (0-based).",
    "voxel_k": "Slice index of the lesion position in that series (0-based).",
    "size_x_mm": "Extent of the lesion along x (mm); empty without an extent.",
    "size_y_mm": "Extent of the lesion along y (mm); empty without an extent.",
    "size_z_mm": "Extent of the lesion along z (mm); empty without an extent.",
    "stir_muscle_ratio": "STIR signal-intensity ratio lesion:muscle (unit 1): mean of the lesion's ROI divided by "
                         "the mean of the read's muscle ROI, both on the STIR series; empty without both ROIs.",
    "confidence": "Reader's confidence in the lesion, 1 (low) to 5 (high); empty when not given.",
    "active_seconds": "Active reading time of the read in seconds: time with input while the viewer had the focus; "
                      "idle spells count up to the reading study's idle limit (60 s outside a study), then pause.",
    "comment": "Reader's free-text comment (line breaks written as LF; formula starts neutralised).",
}
READ_COLUMNS = READ_KEY_COLUMNS + [
    "started", "submitted", "lesions", "units_with_lesion", "units_no_lesion", "units_not_assessable", "total",
    "active_seconds",
    "complete",
]


def lesion_rows(document: dict) -> tuple[list[str], list[dict]]:
    """Columns and rows of the lesion table (one grade column per scheme item)."""
    items = _item_columns(document)
    rows = []
    for read in document["reads"]:
        for lesion in read["lesions"]:
            site, sub, side = lesion["site"] or {}, lesion["subsite"] or {}, lesion["laterality"] or {}
            sizes = lesion["sizes_mm"] or ["", "", ""]
            row = {
                **_read_key(read), "lesion_id": lesion["lesion_id"],
                "tracking_uid": lesion.get("tracking_uid", ""),
                "site_id": site.get("id", ""), "site_label": site.get("label", ""),
                "site_code": site.get("code", {}).get("value", ""),
                "site_code_scheme": site.get("code", {}).get("scheme", ""),
                "bone_code": site.get("bone_code", {}).get("value", ""),
                "region": site.get("region", ""), "group": site.get("group", ""),
                "subsite_id": sub.get("id", ""), "subsite_code": sub.get("code", {}).get("value", ""),
                "side": side.get("side", ""), "side_code": side.get("code", {}).get("value", ""),
                "unit_id": site.get("unit_id") or "",
                "x_mm": lesion["position"]["lps_mm"][0], "y_mm": lesion["position"]["lps_mm"][1],
                "z_mm": lesion["position"]["lps_mm"][2], "series_uid": lesion["position"]["series_uid"],
                "voxel_i": lesion["position"]["voxel"][0], "voxel_j": lesion["position"]["voxel"][1],
                "voxel_k": lesion["position"]["voxel"][2],
                "size_x_mm": sizes[0], "size_y_mm": sizes[1], "size_z_mm": sizes[2],
                "volume_ml": _blank(lesion["volume_ml"]),
                "lesion_item_sum_not_additive": _lesion_sum(lesion),
                "confidence": _blank(lesion["confidence"]), "comment": lesion["comment"],
                "stir_muscle_ratio": _blank(lesion.get("stir_muscle_ratio")),
            }
            for column, item_id in items:
                row[column] = _blank(lesion["grades"].get(item_id))
            rows.append(row)
    return LESION_COLUMNS + [c for c, _ in items], rows


def _read_key(read: dict) -> dict:
    """The :data:`READ_KEY_COLUMNS` cells of a read (``reading_code`` when the caller added it)."""
    return {"read_id": read["read_id"], "study_uid": read["study_uid"], "reader": read["reader"],
            "status": read["status"], "reading_study": _blank(read.get("reading_study")),
            "reading_code": _blank(read.get("reading_code")), "role": _blank(read.get("role")),
            "version": _blank(read.get("version")), "supersedes": _blank(read.get("supersedes")),
            "scheme_id": read["scheme"]["id"], "scheme_version": read["scheme"]["version"]}


def _lesion_sum(lesion: dict):
    if lesion["score"] is not None:
        return lesion["score"]
    placed = lesion["site"] and lesion["site"].get("unit_id")
    return "NA" if placed else ""


def unit_rows(document: dict) -> tuple[list[str], list[dict]]:
    """Columns and rows of the bone-unit table: one row per scored or marked unit of each read."""
    items = _item_columns(document)
    rows = []
    for read in document["reads"]:
        for unit in read["scores"]["units"]:
            row = {**_read_key(read), "unit_id": unit["unit_id"],
                   "unit_status": unit["status"], "unit_score": "NA" if unit["score"] is None else unit["score"]}
            for column, item_id in items:
                row[column] = _blank(unit["items"].get(item_id))
            rows.append(row)
    return UNIT_COLUMNS + [c for c, _ in items], rows


def column_rows(tables: dict[str, list[str]]) -> tuple[list[str], list[dict]]:
    """The codebook: file, column and meaning of every column written."""
    rows = []
    for name, columns in tables.items():
        for column in columns:
            meaning = COLUMN_MEANINGS.get(column, "")
            if column.startswith("grade_"):
                meaning = f"Grade of scheme item {column[6:]} (NA: not assessable; empty: not graded or not applicable)"
            elif column.startswith("region_"):
                meaning = f"Sum of the read's assessable unit scores in taxonomy region {column[7:]}."
            elif column.startswith("group_"):
                meaning = (f"Sum of the read's assessable unit scores in reporting group {column[6:]} "
                           "(a group includes its subgroups).")
            rows.append({"file": name, "column": column, "meaning": meaning})
    return ["file", "column", "meaning"], rows


def read_rows(document: dict) -> tuple[list[str], list[dict]]:
    """Columns and rows of the read table: totals per region, per reporting group and for the patient."""
    regions = sorted(load_taxonomy().regions)
    groups = [g["id"] for g in load_taxonomy().groups]
    rows = []
    for read in document["reads"]:
        scores = read["scores"]
        row = {
            **_read_key(read), "started": read["started"], "submitted": _blank(read["submitted"]), "lesions": len(read["lesions"]),
            "units_with_lesion": scores["units_with_lesion"], "units_no_lesion": scores["units_no_lesion"],
            "units_not_assessable": scores["units_not_assessable"], "total": scores["total"],
            "active_seconds": read.get("active_seconds", 0.0),
            "complete": "true" if scores["complete"] else "false",
        }
        group_totals = _group_totals(read)
        for region in regions:
            row[f"region_{region}"] = scores["regions"].get(region, 0)
        for group in groups:
            row[f"group_{group}"] = group_totals.get(group, 0)
        rows.append(row)
    return READ_COLUMNS + [f"region_{r}" for r in regions] + [f"group_{g}" for g in groups], rows


def _group_totals(read: dict) -> dict[str, int]:
    taxonomy = load_taxonomy(f"{read['taxonomy']['id']}-{read['taxonomy']['version']}")
    totals: dict[str, int] = {}
    for unit in read["scores"]["units"]:
        if unit["score"] is None:
            continue
        site, _ = taxonomy.unit_site(unit["unit_id"])
        for group in taxonomy.group_path(site.group):
            totals[group] = totals.get(group, 0) + unit["score"]
    return totals


def _item_columns(document: dict) -> list[tuple[str, str]]:
    seen: dict[str, None] = {}
    for read in document["reads"]:
        scheme = load_scheme(read["scheme"]["id"], read["scheme"]["version"])
        for item in scheme.items:
            seen.setdefault(f"{scheme.id}:{item.id}", None)
    return [(f"grade_{key.split(':')[1]}", key.split(":")[1]) for key in seen]


def _blank(value):
    return "" if value is None else value


#: What a spreadsheet takes for the start of a formula (OWASP CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value):
    """A CSV cell that no spreadsheet runs as a formula.

    Text starting with ``= + - @``, a tab or a carriage return gets a leading
    single quote, unless it is exactly a decimal number; numbers are returned
    unchanged. Line breaks are written as LF (so the CSV writer quotes the
    cell) and every line of the cell is neutralised the same way.

    Examples
    --------
    >>> safe_cell("=HYPERLINK(\"http://x\")"), safe_cell("-77.5"), safe_cell(-77.5), safe_cell("@SUM(A1)")
    ('\'=HYPERLINK("http://x")', '-77.5', -77.5, "'@SUM(A1)")
    """
    if isinstance(value, numbers.Number) or not isinstance(value, str):
        return value
    if "\r" in value or "\n" in value:
        lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "\n".join(_safe_line(line) for line in lines)
    return _safe_line(value)


def _safe_line(text: str) -> str:
    """``text`` (one line) with a leading single quote when it starts a formula and is no number."""
    if text.startswith(FORMULA_START) and not _DECIMAL.fullmatch(text):
        return "'" + text
    return text


def csv_text(columns: list[str], rows: Iterable[dict]) -> str:
    """CSV text of ``rows`` (keys outside ``columns`` ignored), every cell through :func:`safe_cell`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[safe_cell(c) for c in columns], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows({safe_cell(k): safe_cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> Path:
    """Write a CSV table atomically, formula cells neutralised (:func:`safe_cell`)."""
    return atomic_write_text(path, csv_text(columns, rows))


def latest_submitted(reads: list[dict]) -> list[dict]:
    """Of the submitted ``reads`` (read documents), each reader's newest version per case, reading study and role."""
    newest: dict[tuple, dict] = {}
    for read in reads:
        if read["status"] != "submitted":
            continue
        key = (read["study_uid"], read["reader"], read.get("reading_study"), read.get("role"))
        if key not in newest or read["version"] > newest[key]["version"]:
            newest[key] = read
    kept = {id(r) for r in newest.values()}
    return [r for r in reads if id(r) in kept]


def write_tables(document: dict, folder: Path) -> list[Path]:
    """Write ``lesions.csv``, ``units.csv``, ``reads.csv`` and the codebook ``columns.csv`` atomically."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnoError(f"cannot create {folder}: {exc.strerror}") from None
    out = []
    tables = {"lesions.csv": lesion_rows(document), "units.csv": unit_rows(document), "reads.csv": read_rows(document)}
    tables["columns.csv"] = column_rows({name: columns for name, (columns, _) in tables.items()})
    for name, (columns, rows) in tables.items():
        out.append(write_csv(folder / name, columns, rows))
    return out

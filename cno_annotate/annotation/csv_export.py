"""CSV tables for statistics (R, pandas, SPSS): one row per lesion, one per read.

Built from the JSON export form (:func:`documents.export_document`), so the
two exports always agree. Missing values are empty cells; "not assessable"
grades are ``NA``.

Formula injection: a spreadsheet runs a cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return as a formula. Every CSV the tool
writes goes through :func:`safe_cell`, which (as OWASP recommends) prefixes
such text with a single quote. Numbers stay numbers: a value that is a number
(``-77.0``), or text that is exactly a decimal number (``-3``, ``+1.5e3``), is
written as it is, since a spreadsheet reads it as a number, not a formula.
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

LESION_COLUMNS = [
    "read_id", "study_uid", "reader", "status", "scheme_id", "scheme_version", "lesion_id",
    "site_id", "site_label", "site_code", "site_code_scheme", "bone_code", "region", "group",
    "subsite_id", "subsite_code", "side", "side_code", "unit_id",
    "x_mm", "y_mm", "z_mm", "series_uid", "voxel_i", "voxel_j", "voxel_k",
    "size_x_mm", "size_y_mm", "size_z_mm", "volume_ml", "lesion_score", "confidence", "comment",
]
READ_COLUMNS = [
    "read_id", "study_uid", "reader", "status", "scheme_id", "scheme_version", "started", "submitted",
    "lesions", "units_with_lesion", "units_no_lesion", "units_not_assessable", "total",
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
                "read_id": read["read_id"], "study_uid": read["study_uid"], "reader": read["reader"],
                "status": read["status"], "scheme_id": read["scheme"]["id"],
                "scheme_version": read["scheme"]["version"], "lesion_id": lesion["lesion_id"],
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
                "volume_ml": _blank(lesion["volume_ml"]), "lesion_score": _blank(lesion["score"]),
                "confidence": _blank(lesion["confidence"]), "comment": lesion["comment"],
            }
            for column, item_id in items:
                row[column] = _blank(lesion["grades"].get(item_id))
            rows.append(row)
    return LESION_COLUMNS + [c for c, _ in items], rows


def read_rows(document: dict) -> tuple[list[str], list[dict]]:
    """Columns and rows of the read table: totals per region, per reporting group and for the patient."""
    regions = sorted(load_taxonomy().regions)
    groups = [g["id"] for g in load_taxonomy().groups]
    rows = []
    for read in document["reads"]:
        scores = read["scores"]
        row = {
            "read_id": read["read_id"], "study_uid": read["study_uid"], "reader": read["reader"],
            "status": read["status"], "scheme_id": read["scheme"]["id"], "scheme_version": read["scheme"]["version"],
            "started": read["started"], "submitted": _blank(read["submitted"]), "lesions": len(read["lesions"]),
            "units_with_lesion": scores["units_with_lesion"], "units_no_lesion": scores["units_no_lesion"],
            "units_not_assessable": scores["units_not_assessable"], "total": scores["total"],
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
    unchanged.

    Examples
    --------
    >>> safe_cell("=HYPERLINK(\"http://x\")"), safe_cell("-77.5"), safe_cell(-77.5), safe_cell("@SUM(A1)")
    ('\'=HYPERLINK("http://x")', '-77.5', -77.5, "'@SUM(A1)")
    """
    if isinstance(value, numbers.Number) or not isinstance(value, str):
        return value
    if value.startswith(FORMULA_START) and not _DECIMAL.fullmatch(value):
        return "'" + value
    return value


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


def write_tables(document: dict, folder: Path) -> list[Path]:
    """Write ``lesions.csv`` and ``reads.csv`` atomically; returns the paths."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnoError(f"cannot create {folder}: {exc.strerror}") from None
    out = []
    for name, (columns, rows) in (("lesions.csv", lesion_rows(document)), ("reads.csv", read_rows(document))):
        out.append(write_csv(folder / name, columns, rows))
    return out

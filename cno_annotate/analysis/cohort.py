"""A reading study as analysis input, and the analyses that work on it.

:func:`collect` gathers, per case, each reader's latest submitted read and the
adjudicator's; the functions below turn cases into the report's tables:
reader agreement, clinical-imaging concordance, site distribution (Table 2
layout of the cohort paper) and follow-up. They take plain
:class:`~cno_annotate.annotation.model.Read` objects, so a test can build a
cohort by hand.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cno_annotate.analysis import agreement
from cno_annotate.annotation.model import Read
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Scheme
from cno_annotate.annotation.scoring import (
    UNIT_NOT_ASSESSABLE,
    Finding,
    ReadScores,
    score_read,
)
from cno_annotate.annotation.taxonomy import Taxonomy
from cno_annotate.errors import CnoError

ADJUDICATED = "adjudicated"


@dataclass
class Case:
    """One case of a reading study: who read it and how."""

    code: str
    patient: str
    timepoint: int
    reads: dict[str, Read] = field(default_factory=dict)  # reader -> latest submitted read
    adjudicated: Read | None = None
    clinical_sites: list[tuple[str, str | None]] | None = None  # painful (site id, side); None: no record


def collect(store, name: str, clinical_db=None) -> list[Case]:
    """The cases of a reading study with their latest submitted reads and clinical sites.

    The clinical visit used for a case is the one closest in date to the study.
    """
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import list_reads, load_read

    rs.get(store, name)
    dates = {s["study_uid"]: s["study_date"] for s in store.studies()}
    links = clinical_db.links(name) if clinical_db is not None else {}
    cases = []
    for row in rs.cases(store, name):
        case = Case(row["reading_code"], row["patient_code"], row["timepoint"])
        for read_row in latest_submitted(list_reads(store, study_uid=row["study_uid"], reading_study=name)):
            read = load_read(store, read_row["read_id"])
            if read.role == "adjudicator":
                case.adjudicated = read
            else:
                case.reads[read.reader] = read
        record = links.get(row["reading_code"])
        if record is not None:
            case.clinical_sites = _closest_visit_sites(clinical_db.record(record), dates.get(row["study_uid"], ""))
        cases.append(case)
    return cases


def latest_submitted(rows: list[dict]) -> list[dict]:
    """Per reader and role, the submitted read of the highest version.

    A reader who opened a new version of a submitted read (a draft) is still
    analysed with the last version they submitted.
    """
    newest: dict[tuple, dict] = {}
    for row in rows:
        if row["status"] != "submitted":
            continue
        key = (row["reader"], row["role"])
        if key not in newest or row["version"] > newest[key]["version"]:
            newest[key] = row
    return list(newest.values())


def _closest_visit_sites(visits: list[dict], study_date: str) -> list[tuple[str, str | None]]:
    if not visits:
        return []
    target = f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:8]}" if len(study_date) == 8 else ""
    visit = min(visits, key=lambda v: abs(_days(v["visit_date"]) - _days(target)) if target else 0)
    return [(s["site_id"], s["side"]) for s in visit["painful_sites"]]


def _days(text: str) -> int:
    from datetime import date

    return date.fromisoformat(text).toordinal()


def reference_read(case: Case, source: str) -> Read | None:
    """The read a cohort table uses: the adjudicated one or a named reader's."""
    return case.adjudicated if source == ADJUDICATED else case.reads.get(source)


def scores_of(read: Read, scheme: Scheme, taxonomy: Taxonomy) -> ReadScores:
    """Scores of a read."""
    findings = [Finding(l.lesion_id, l.site_id, l.side, l.grades) for l in read.lesions]
    return score_read(findings, read.unit_marks, scheme, taxonomy)


def all_units(taxonomy: Taxonomy) -> list[str]:
    """Every bone unit of the taxonomy (paired units on both sides)."""
    units = set()
    for site in taxonomy.sites.values():
        units |= {f"{site.unit}:{s}" for s in "RL"} if site.lateral else {site.unit}
    return sorted(units)


# -- agreement ---------------------------------------------------------------------------------
def agreement_report(cases: list[Case], readers: list[str], scheme: Scheme, taxonomy: Taxonomy,
                     threshold_mm: float = 20.0) -> dict:
    """Every agreement statistic between the readers of a reading study.

    Missing reads are missing values (NaN): Fleiss' kappa and the ICCs use the
    cases every reader read; Krippendorff's alpha and Cohen's kappa use what
    there is. "Not assessable" is missing too, never 0.
    """
    if len(readers) < 2:
        raise CnoError("agreement needs at least two readers with submitted reads")
    scored = {(c.code, r): scores_of(c.reads[r], scheme, taxonomy) for c in cases for r in readers if r in c.reads}
    units = all_units(taxonomy)
    presence = _unit_table(cases, readers, units, scored, lambda u: 1.0 if u.lesions else 0.0)
    out: dict = {"readers": readers, "cases": len(cases), "scheme": scheme.ref,
                 "reads": {r: sum((c.code, r) in scored for c in cases) for r in readers}}
    out["unit_presence"] = {
        "targets": int(presence.shape[0]),
        "complete_targets": int((~np.isnan(presence).any(axis=1)).sum()),
        "fleiss_kappa": agreement.fleiss_kappa(presence, "fleiss"),
        "randolph_kappa": agreement.fleiss_kappa(presence, "randolph"),
    }
    out["items"] = _item_agreement(cases, readers, scheme, taxonomy, scored)
    totals = np.array([[float(scored[(c.code, r)].total) if (c.code, r) in scored else np.nan for r in readers]
                       for c in cases])
    icc2, icc3 = agreement.icc(totals)
    out["totals"] = {"values": {c.code: dict(zip(readers, row.tolist())) for c, row in zip(cases, totals)},
                     "icc": [vars(icc2), vars(icc3)]}
    if len(readers) >= 2:
        ba = agreement.bland_altman(totals[:, 0], totals[:, 1])
        out["totals"]["bland_altman"] = {"readers": readers[:2], **vars(ba)}
    out["lesions"] = _lesion_agreement(cases, readers, taxonomy, threshold_mm)
    return out


def _unit_table(cases, readers, units, scored, value) -> np.ndarray:
    rows = []
    for case in cases:
        for unit in units:
            row = []
            for reader in readers:
                scores = scored.get((case.code, reader))
                if scores is None:
                    row.append(np.nan)
                    continue
                unit_score = scores.units.get(unit)
                if unit_score is None:
                    row.append(0.0)
                elif unit_score.status == UNIT_NOT_ASSESSABLE and not unit_score.lesions:
                    row.append(np.nan)  # marked not assessable: nobody can say whether it holds a lesion
                else:
                    row.append(value(unit_score))
            rows.append(row)
    return np.array(rows, dtype=float).reshape(len(rows), len(readers))


def _item_agreement(cases, readers, scheme, taxonomy, scored) -> list[dict]:
    """Per scored item: over units any reader found a lesion in, each reader's unit grade."""
    out = []
    for item in scheme.items:
        if not item.scored:
            continue
        rows = []
        for case in cases:
            units = {u for r in readers if (case.code, r) in scored
                     for u, s in scored[(case.code, r)].units.items() if s.status == "lesion" and item.id in s.items}
            for unit in sorted(units):
                row = []
                for reader in readers:
                    scores = scored.get((case.code, reader))
                    unit_score = scores.units.get(unit) if scores else None
                    if scores is None or (unit_score is not None and unit_score.status == UNIT_NOT_ASSESSABLE):
                        row.append(np.nan)
                    elif unit_score is None:
                        row.append(0.0)
                    else:
                        grade = unit_score.items.get(item.id, NOT_ASSESSABLE)
                        row.append(np.nan if grade == NOT_ASSESSABLE else float(grade))
                rows.append(row)
        table = np.array(rows, dtype=float).reshape(len(rows), len(readers))
        categories = list(item.values)
        pairs = []
        for (i, a), (j, b) in itertools.combinations(enumerate(readers), 2):
            if len(table):
                pairs.append({"readers": [a, b],
                              "n": int((~np.isnan(table[:, i]) & ~np.isnan(table[:, j])).sum()),
                              "kappa_linear": agreement.cohen_kappa(table[:, i], table[:, j], categories, "linear"),
                              "kappa_quadratic": agreement.cohen_kappa(table[:, i], table[:, j], categories, "quadratic")})
        out.append({"item": item.id, "label": item.label, "targets": len(rows), "pairs": pairs,
                    "krippendorff_alpha": agreement.krippendorff_alpha(table, categories) if len(rows) else float("nan")})
    return out


def lesion_units(read: Read, taxonomy: Taxonomy) -> list[tuple[str, str, np.ndarray]]:
    """(lesion id, bone unit, position) of the placed lesions of a read."""
    out = []
    for lesion in read.lesions:
        if lesion.site_id and (lesion.side or not taxonomy.site(lesion.site_id).lateral):
            out.append((lesion.lesion_id, taxonomy.unit_id(lesion.site_id, lesion.side), np.array(lesion.position)))
    return out


def _lesion_agreement(cases, readers, taxonomy, threshold_mm) -> list[dict]:
    out = []
    for a, b in itertools.combinations(readers, 2):
        matched = only_a = only_b = 0
        unmatched = []
        for case in cases:
            if a not in case.reads or b not in case.reads:
                continue
            result = agreement.match_lesions(lesion_units(case.reads[a], taxonomy),
                                             lesion_units(case.reads[b], taxonomy), threshold_mm)
            matched += len(result.matched)
            only_a += len(result.only_a)
            only_b += len(result.only_b)
            unmatched += [{"case": case.code, "reader": a, "lesion": lid} for lid in result.only_a]
            unmatched += [{"case": case.code, "reader": b, "lesion": lid} for lid in result.only_b]
        total = 2 * matched + only_a + only_b
        out.append({"readers": [a, b], "threshold_mm": threshold_mm, "matched": matched, "only_first": only_a,
                    "only_second": only_b, "psa": (2 * matched / total) if total else float("nan"),
                    "unmatched": unmatched})
    return out


# -- clinical versus imaging -----------------------------------------------------------------------
CONCORDANCE_RULES = (
    "Counted as the cohort paper counts: painful sites (a bone site or a clinical region such as 'knee' or "
    "'SI joint', with its side) and imaging lesions, never merged into bone units. A painful site is confirmed "
    "when at least one imaging lesion lies in a bone unit it covers on the same side (midline units on either "
    "side); otherwise it is clinical only. An imaging lesion that lies in no unit covered by a painful site is "
    "subclinical. Per timepoint: each case's reference read against the clinical visit closest to its study date. "
    "Cumulative: per patient over every analysed timepoint; a painful site is counted once per patient (site and "
    "side), confirmed if a lesion at any timepoint lies in a unit it covers; lesions are counted per bone unit as "
    "the most lesions that unit held at one timepoint (a lesion seen at several timepoints counts once).")
SITE_COUNTS = ("sites", "sites_confirmed", "sites_clinical_only")
LESION_COUNTS = ("lesions", "lesions_in_painful_sites", "lesions_subclinical")


def concordance(cases: list[Case], source: str, taxonomy: Taxonomy) -> dict:
    """Painful sites against imaging lesions, per timepoint and cumulative per patient.

    Parameters
    ----------
    cases : list of Case
        ``clinical_sites`` name taxonomy sites or clinical regions (with sides).
    source : str
        ``"adjudicated"`` or a reader: whose reads are the imaging.
    taxonomy : Taxonomy
        Resolves the painful sites (a read's lesions use the read's own taxonomy).

    Returns
    -------
    dict
        ``per_timepoint`` and ``cumulative``, each with per-case (per-patient)
        entries, ``totals`` (sites and lesions counted separately, see
        :data:`CONCORDANCE_RULES`) and ``groups`` (Table 2 rows); ``skipped``
        lists cases without a reference read or clinical record.
    """
    entries, skipped = [], []
    for case in sorted(cases, key=lambda c: (c.patient, c.timepoint, c.code)):
        read = reference_read(case, source)
        if read is None or case.clinical_sites is None:
            skipped.append({"case": case.code, "why": "no reference read" if read is None else "no clinical record"})
            continue
        entries.append(_case_concordance(case, read, taxonomy))
    by_patient: dict[str, list[dict]] = {}
    for entry in entries:
        by_patient.setdefault(entry["patient"], []).append(entry)
    patients = [_patient_concordance(patient, series) for patient, series in sorted(by_patient.items())]
    return {"source": source, "rules": CONCORDANCE_RULES, "skipped": skipped,
            "per_timepoint": _summarise(entries, taxonomy, "case"),
            "cumulative": _summarise(patients, taxonomy, "patient")}


def _case_concordance(case: Case, read: Read, taxonomy: Taxonomy) -> dict:
    read_taxonomy = _taxonomy_of(read, taxonomy)
    lesions: list[dict] = []
    for lesion in read.lesions:
        if lesion.site_id and (lesion.side or not read_taxonomy.site(lesion.site_id).lateral):
            site = read_taxonomy.site(lesion.site_id)
            lesions.append({"lesion": lesion.lesion_id, "unit": read_taxonomy.unit_id(lesion.site_id, lesion.side),
                            "group": site.group_of(lesion.subsite)})
    sites: list[dict] = []
    for site_id, side in dict.fromkeys(case.clinical_sites or []):
        units = taxonomy.covered_units(site_id, side)
        found = [l["lesion"] for l in lesions if l["unit"] in units]
        sites.append({"site": site_id, "side": side, "label": taxonomy.painful_site(site_id).label,
                      "group": taxonomy.painful_site(site_id).group, "units": sorted(units),
                      "confirmed": bool(found), "lesions": found})
    covered: set[str] = set().union(*(set(s["units"]) for s in sites)) if sites else set()
    for entry in lesions:
        entry["subclinical"] = entry["unit"] not in covered
    return {"case": case.code, "patient": case.patient, "timepoint": case.timepoint, "sites": sites,
            "lesions": lesions}


def _taxonomy_of(read: Read, default: Taxonomy) -> Taxonomy:
    from cno_annotate.annotation.taxonomy import load_taxonomy

    return default if read.taxonomy == f"{default.id}-{default.version}" else load_taxonomy(read.taxonomy)


def _patient_concordance(patient: str, series: list[dict]) -> dict:
    sites: dict[tuple, dict] = {}
    for entry in series:
        for site in entry["sites"]:
            sites.setdefault((site["site"], site["side"]), {**site, "confirmed": False, "lesions": []})
    for site in sites.values():
        site["lesions"] = [f"{e['case']}/{l['lesion']}" for e in series for l in e["lesions"]
                           if l["unit"] in site["units"]]
        site["confirmed"] = bool(site["lesions"])
    covered = set().union(*(set(s["units"]) for s in sites.values())) if sites else set()
    per_unit: dict[str, list[dict]] = {}
    for entry in series:
        at_timepoint: dict[str, list[dict]] = {}
        for lesion in entry["lesions"]:
            at_timepoint.setdefault(lesion["unit"], []).append({**lesion, "lesion": f"{entry['case']}/{lesion['lesion']}"})
        for unit, found in at_timepoint.items():
            if len(found) > len(per_unit.get(unit, [])):
                per_unit[unit] = found
    lesions = [{**l, "subclinical": unit not in covered} for unit, found in sorted(per_unit.items()) for l in found]
    return {"patient": patient, "cases": [e["case"] for e in series], "sites": list(sites.values()),
            "lesions": lesions}


def _summarise(entries: list[dict], taxonomy: Taxonomy, key: str) -> dict:
    by_group: dict[str, dict[str, int]] = {}

    def add(group: str, counter: str) -> None:
        for g in taxonomy.group_path(group):
            row = by_group.setdefault(g, dict.fromkeys(SITE_COUNTS + LESION_COUNTS, 0))
            row[counter] += 1

    rows = []
    for entry in entries:
        counts = dict.fromkeys(SITE_COUNTS + LESION_COUNTS, 0)
        for site in entry["sites"]:
            outcome = "sites_confirmed" if site["confirmed"] else "sites_clinical_only"
            for counter in ("sites", outcome):
                counts[counter] += 1
                add(site["group"], counter)
        for lesion in entry["lesions"]:
            outcome = "lesions_subclinical" if lesion["subclinical"] else "lesions_in_painful_sites"
            for counter in ("lesions", outcome):
                counts[counter] += 1
                add(lesion["group"], counter)
        rows.append({**entry, "counts": counts})
    totals = {k: sum(r["counts"][k] for r in rows) for k in SITE_COUNTS + LESION_COUNTS}
    return {"unit_of_analysis": key, "entries": rows, "totals": totals, "groups": _ordered_groups(by_group, taxonomy)}


def _ordered_groups(values: dict, taxonomy: Taxonomy) -> list[dict]:
    return [{"group": g["id"], "label": g["label"], "parent": g["parent"], **values[g["id"]]}
            for g in taxonomy.groups if g["id"] in values]


# -- site distribution -----------------------------------------------------------------------------
def distribution(cases: list[Case], source: str, taxonomy: Taxonomy) -> dict:
    """Lesions per site group, clinical and radiological side by side (Table 2 layout).

    Radiological counts are lesions of the reference reads; clinical counts
    painful sites. Per patient, the first timepoint is used for lesions per
    patient, unifocal / multifocal and symmetry: a patient is symmetric when
    at least one paired bone unit is affected on both sides.
    """
    radiological: dict[str, int] = {}
    clinical: dict[str, int] = {}
    first: dict[str, Case] = {}
    for case in sorted(cases, key=lambda c: (c.patient, c.timepoint)):
        first.setdefault(case.patient, case)
        read = reference_read(case, source)
        if read is not None:
            read_taxonomy = _taxonomy_of(read, taxonomy)
            for lesion in read.lesions:
                if lesion.site_id:
                    for group in taxonomy.group_path(read_taxonomy.site(lesion.site_id).group_of(lesion.subsite)):
                        radiological[group] = radiological.get(group, 0) + 1
        for site, _side in case.clinical_sites or []:
            for group in taxonomy.group_path(taxonomy.painful_site(site).group):
                clinical[group] = clinical.get(group, 0) + 1
    total_rad = sum(v for k, v in radiological.items() if _is_top(k, taxonomy))
    total_cli = sum(v for k, v in clinical.items() if _is_top(k, taxonomy))
    rows = []
    for g in taxonomy.groups:
        n_cli, n_rad = clinical.get(g["id"], 0), radiological.get(g["id"], 0)
        rows.append({"group": g["id"], "label": g["label"], "parent": g["parent"],
                     "clinical_n": n_cli, "clinical_pct": 100 * n_cli / total_cli if total_cli else 0.0,
                     "radiological_n": n_rad, "radiological_pct": 100 * n_rad / total_rad if total_rad else 0.0})
    per_patient: list[dict[str, Any]] = []
    for patient, case in sorted(first.items()):
        read = reference_read(case, source)
        if read is None:
            continue
        units = [u for _, u, _ in lesion_units(read, taxonomy)]
        per_patient.append({"patient": patient, "case": case.code, "lesions": len(read.lesions),
                            "symmetric": _symmetric(units)})
    counts = [p["lesions"] for p in per_patient]
    with_lesions = [p for p in per_patient if p["lesions"] > 0]
    return {
        "source": source, "rows": rows, "total_clinical": total_cli, "total_radiological": total_rad,
        "patients": per_patient,
        "lesions_per_patient": {"mean": float(np.mean(counts)) if counts else float("nan"),
                                "min": min(counts) if counts else None, "max": max(counts) if counts else None},
        "unifocal": sum(p["lesions"] == 1 for p in per_patient),
        "multifocal": sum(p["lesions"] > 1 for p in per_patient),
        "symmetric": sum(p["symmetric"] for p in with_lesions),
        "asymmetric": sum(not p["symmetric"] for p in with_lesions),
    }


def _is_top(group: str, taxonomy: Taxonomy) -> bool:
    return next(g["parent"] for g in taxonomy.groups if g["id"] == group) is None


def _symmetric(units: list[str]) -> bool:
    sides: dict[str, set[str]] = {}
    for unit in units:
        base, _, side = unit.partition(":")
        if side:
            sides.setdefault(base, set()).add(side)
    return any(s == {"L", "R"} for s in sides.values())


# -- follow-up ------------------------------------------------------------------------------------
CHANGE = ("new", "resolved", "improved", "stable", "worse")


def unit_change(before: int, after: int) -> str | None:
    """Category of a bone unit between two timepoints (None: no lesion at either)."""
    if before == 0 and after == 0:
        return None
    if before == 0:
        return "new"
    if after == 0:
        return "resolved"
    if after < before:
        return "improved"
    if after > before:
        return "worse"
    return "stable"


def followup(cases: list[Case], source: str, scheme: Scheme, taxonomy: Taxonomy) -> dict:
    """Per patient with several timepoints: unit changes between consecutive reads, and totals over time."""
    by_patient: dict[str, list[Case]] = {}
    for case in cases:
        by_patient.setdefault(case.patient, []).append(case)
    patients, overall = [], dict.fromkeys(CHANGE, 0)
    for patient, series in sorted(by_patient.items()):
        read_cases = sorted(((c, r) for c in series if (r := reference_read(c, source)) is not None),
                            key=lambda pair: pair[0].timepoint)
        if len(read_cases) < 2:
            continue
        series = [c for c, _ in read_cases]
        scores = [scores_of(r, scheme, taxonomy) for _, r in read_cases]
        steps = []
        for (c0, s0), (c1, s1) in zip(zip(series, scores), zip(series[1:], scores[1:])):
            counts = dict.fromkeys(CHANGE, 0)
            units = []
            for unit in sorted(set(s0.units) | set(s1.units)):
                u0, u1 = s0.units.get(unit), s1.units.get(unit)
                score0, score1 = (u0.score if u0 else 0), (u1.score if u1 else 0)
                if score0 is None or score1 is None:
                    continue  # not assessable at one timepoint: no change can be said
                category = unit_change(score0, score1)
                if category:
                    counts[category] += 1
                    overall[category] += 1
                    units.append({"unit": unit, "before": u0.score if u0 else 0, "after": u1.score if u1 else 0,
                                  "change": category})
            steps.append({"from": c0.code, "to": c1.code, "counts": counts, "units": units})
        totals = [s.total for s in scores]
        patients.append({"patient": patient, "cases": [c.code for c in series],
                         "timepoints": [c.timepoint for c in series], "totals": totals,
                         "total_change": totals[-1] - totals[0], "steps": steps})
    return {"source": source, "patients": patients, "counts": overall}

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
from typing import TYPE_CHECKING, Any

import numpy as np

from cno_annotate.analysis import agreement
from cno_annotate.annotation.model import Read
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Scheme
from cno_annotate.annotation.scoring import (
    UNIT_NOT_ASSESSABLE,
    ReadScores,
    score_read,
)
from cno_annotate.annotation.taxonomy import Taxonomy
from cno_annotate.annotation.validation import unit_of
from cno_annotate.errors import CnoError
from cno_annotate.wording import counted

if TYPE_CHECKING:
    from cno_annotate.store.clinical import Visit

ADJUDICATED = "adjudicated"


@dataclass
class Case:
    """One case of a reading study: who read it and how."""

    code: str
    patient: str
    timepoint: int
    reads: dict[str, Read] = field(default_factory=dict)  # reader -> latest submitted read
    adjudicated: Read | None = None
    clinical_sites: list[tuple[str, str | None]] | None = None  # painful (site id, side); None: no clinical data
    clinical_missing: str | None = None  # why clinical_sites is None (when a link key was given)
    visit_gap_days: int | None = None  # days between the study and the clinical visit used


#: Default largest gap, in days, between a study and the clinical visit used for it.
VISIT_WINDOW_DAYS = 90


def collect(store, name: str, clinical_db=None, visit_window_days: int = VISIT_WINDOW_DAYS) -> list[Case]:
    """The cases of a reading study with their latest submitted reads and clinical sites.

    The clinical visit used for a case is the one nearest in date to the
    study, before or after, if it lies within ``visit_window_days``; a case
    without such a visit (or without a linked record) has no clinical data
    (``clinical_sites`` None, ``clinical_missing`` says why).
    """
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import list_reads, load_read

    rs.get(store, name)
    dates = {s.study_uid: s.study_date for s in store.studies(count_missing=False)}
    links = clinical_db.links(name) if clinical_db is not None else {}
    cases = []
    for row in rs.cases(store, name):
        case = Case(row.reading_code, row.patient_code, row.timepoint)
        for read_row in latest_submitted(list_reads(store, study_uid=row.study_uid, reading_study=name)):
            read = load_read(store, read_row["read_id"])
            if read.role == "adjudicator":
                case.adjudicated = read
            else:
                case.reads[read.reader] = read
        if clinical_db is not None:
            record = links.get(row.reading_code)
            visits = clinical_db.visits(record) if record is not None else None
            _attach_visit(case, visits, dates.get(row.study_uid) or "", visit_window_days)
        cases.append(case)
    return cases


def _attach_visit(case: Case, visits: list[Visit] | None, study_date: str, window_days: int) -> None:
    """Set the case's painful sites from the visit nearest its study date within the window, or say why not."""
    if visits is None:
        case.clinical_missing = "not linked to a clinical record"
        return
    if not visits:
        case.clinical_missing = "no clinical visit for the linked record"
        return
    study_day = _study_day(study_date)
    if study_day is None:
        case.clinical_missing = "the study has no date to match a clinical visit to"
        return
    visit = min(visits, key=lambda v: abs(_days(v.visit_date) - study_day))
    gap = abs(_days(visit.visit_date) - study_day)
    if gap > window_days:
        case.clinical_missing = f"no clinical visit within {window_days} days of the study (nearest {gap} days)"
        return
    case.clinical_sites = [(s.site_id, s.side) for s in visit.painful_sites]
    case.visit_gap_days = gap


def _study_day(study_date: str) -> int | None:
    """Day number of a DICOM date (YYYYMMDD), or None when absent or malformed."""
    try:
        return _days(f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:8]}") if len(study_date) == 8 else None
    except ValueError:
        return None


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


def _days(text: str) -> int:
    from datetime import date

    return date.fromisoformat(text).toordinal()


plural = counted  # "1 case", "3 cases"


def reference_read(case: Case, source: str) -> Read | None:
    """The read a cohort table uses: the adjudicated one or a named reader's."""
    return case.adjudicated if source == ADJUDICATED else case.reads.get(source)


def scores_of(read: Read, scheme: Scheme, taxonomy: Taxonomy) -> ReadScores:
    """Scores of a read (with its own scheme and taxonomy when they differ from the report's)."""
    from cno_annotate.annotation.scheme import load_scheme

    if (read.scheme_id, read.scheme_version) != (scheme.id, scheme.version):
        scheme = load_scheme(read.scheme_id, read.scheme_version)
    return score_read(read.lesions, read.unit_marks, scheme, _taxonomy_of(read, taxonomy), read.unit_grades)


def all_units(taxonomy: Taxonomy) -> list[str]:
    """Every bone unit of the taxonomy (paired units on both sides)."""
    units = set()
    for site in taxonomy.sites.values():
        units |= {f"{site.unit}:{s}" for s in "RL"} if site.lateral else {site.unit}
    return sorted(units)


# -- agreement ---------------------------------------------------------------------------------
#: Case-level bootstrap defaults: number of resamples and seed (the report states both).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20261128


def agreement_report(cases: list[Case], readers: list[str], scheme: Scheme, taxonomy: Taxonomy,
                     threshold_mm: float = 20.0, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict:
    """Every agreement statistic between the readers of a reading study, with case-level bootstrap CIs.

    Missing reads are missing values: Fleiss' and Randolph's kappa and the ICCs
    use the cases every reader read (the dropped cases are listed); Krippendorff's
    alpha, Cohen's kappa and specific agreement use every case a reader pair
    (or reader) read. A unit marked "not assessable" is missing, never 0.
    Confidence intervals: percentile intervals over ``resamples`` case
    resamples (:func:`agreement.case_bootstrap`, ``seed``), because the units
    of one child are not independent.
    """
    if len(readers) < 2:
        raise CnoError("agreement needs at least two readers with submitted reads")
    scored = {(c.code, r): scores_of(c.reads[r], scheme, taxonomy) for c in cases for r in readers if r in c.reads}
    units = all_units(taxonomy)
    boot = {"resamples": resamples, "seed": seed}
    presence = _unit_table(cases, readers, units, scored, lambda u: 1.0 if u.lesions else 0.0)
    complete_cases = [c for c in cases if all(r in c.reads for r in readers)]
    out: dict = {"readers": readers, "cases": len(cases), "scheme": scheme.ref,
                 "reads": {r: sum((c.code, r) in scored for c in cases) for r in readers},
                 "bootstrap": {**boot, "level": 0.95, "method": "percentile interval over cases drawn with "
                               "replacement (numpy default_rng(seed).integers(0, n, n) per resample)"}}
    out["missing"] = {
        "cases_with_every_read": len(complete_cases),
        "cases_missing_a_read": [{"case": c.code, "missing": [r for r in readers if r not in c.reads]}
                                 for c in cases if c not in complete_cases],
        "fleiss_note": f"Fleiss' and Randolph's kappa need every reader's read: they use {len(complete_cases)} of "
                       f"{len(cases)} cases and drop {len(cases) - len(complete_cases)}.",
    }
    blocks = {c.code: presence[n * len(units):(n + 1) * len(units)] for n, c in enumerate(cases)}
    out["unit_presence"] = {
        "targets": int(presence.shape[0]),
        "complete_targets": int((~np.isnan(presence).any(axis=1)).sum()),
        "cases": len(complete_cases),
        **_kappas([blocks[c.code] for c in complete_cases], boot),
    }
    out["unit_presence_by_category"] = _kappa_by_category(complete_cases, blocks, units, taxonomy, boot)
    out["unit_specific_agreement"] = _unit_specific_agreement(cases, readers, blocks, boot)
    out["items"] = _item_agreement(cases, readers, scheme, taxonomy, scored, boot)
    out["totals"] = _total_agreement(cases, readers, scored)
    out["lesions"] = _lesion_agreement(cases, readers, scheme, taxonomy, threshold_mm, blocks, boot)
    return out


def _kappas(blocks: list[np.ndarray], boot: dict) -> dict:
    """Fleiss' and Randolph's kappa of lesion presence over the units of these case blocks, with case CIs."""
    raters = blocks[0].shape[1] if blocks else 2
    tallies = np.array([agreement.presence_tally(b) for b in blocks]).reshape(len(blocks), 4)
    total = tallies.sum(axis=0)
    out: dict = {}
    for method, key in (("fleiss", "fleiss_kappa"), ("randolph", "randolph_kappa")):
        out[key] = float(agreement.kappa_from_tally(total, raters, method)[0])

        def stat(sums, method=method):
            return agreement.kappa_from_tally(sums, raters, method)

        ci = agreement.case_bootstrap(tallies, stat, **boot)
        out[f"{key}_ci"] = [ci.low, ci.high]
    out["targets_used"] = int(total[0])
    return out


def _kappa_by_category(complete_cases, blocks, units, taxonomy: Taxonomy, boot: dict) -> list[dict]:
    """Kappa per bone category (top-level reporting group), as the CROMRIS reliability study reported it."""
    category_of = {u: taxonomy.group_path(taxonomy.unit_site(u)[0].group)[-1] for u in units}
    out = []
    for group in taxonomy.groups:
        if group["parent"] is not None:
            continue
        rows = [n for n, u in enumerate(units) if category_of[u] == group["id"]]
        if not rows:
            continue
        result = _kappas([blocks[c.code][rows] for c in complete_cases], boot)
        out.append({"category": group["id"], "label": group["label"], "units": len(rows), **result})
    return out


def _unit_specific_agreement(cases, readers, blocks, boot: dict) -> list[dict]:
    out = []
    for (i, a), (j, b) in itertools.combinations(enumerate(readers), 2):
        per_case = []
        for case in cases:
            if a in case.reads and b in case.reads:
                pair = blocks[case.code][:, [i, j]]
                pair = pair[~np.isnan(pair).any(axis=1)]
                x, y = pair[:, 0] == 1, pair[:, 1] == 1
                per_case.append((int((x & y).sum()), int((x & ~y).sum()), int((~x & y).sum()), int((~x & ~y).sum())))
        out.append({"readers": [a, b], "cases": len(per_case), **_specific(per_case, boot)})
    return out


def _specific(per_case: list[tuple], boot: dict) -> dict:
    tallies = np.array(per_case, dtype=float).reshape(len(per_case), 4)
    total = tallies.sum(axis=0)
    psa, nsa = (float(v[0]) for v in agreement.specific_from_tally(total))
    ci_p = agreement.case_bootstrap(tallies, lambda sums: agreement.specific_from_tally(sums)[0], **boot)
    ci_n = agreement.case_bootstrap(tallies, lambda sums: agreement.specific_from_tally(sums)[1], **boot)
    return {"both": int(total[0]), "only_first": int(total[1]), "only_second": int(total[2]),
            "neither": int(total[3]), "psa": psa, "psa_ci": [ci_p.low, ci_p.high], "nsa": nsa,
            "nsa_ci": [ci_n.low, ci_n.high]}


def _total_agreement(cases, readers, scored) -> dict:
    """ICCs of patient totals: on complete cases, and with totals flagged for leaving out NA items or units."""
    every = [c for c in cases if all((c.code, r) in scored for r in readers)]
    flagged = [c for c in every if not all(scored[(c.code, r)].complete for r in readers)]
    clean = [c for c in every if c not in flagged]
    values = np.array([[float(scored[(c.code, r)].total) if (c.code, r) in scored else np.nan for r in readers]
                       for c in cases]).reshape(len(cases), len(readers))

    def icc_of(subset):
        rows = np.array([[scored[(c.code, r)].total for r in readers] for c in subset], float).reshape(
            len(subset), len(readers))
        return [vars(i) for i in agreement.icc(rows)]

    out = {"values": {c.code: dict(zip(readers, row.tolist())) for c, row in zip(cases, values)},
           "icc": icc_of(clean), "icc_cases": len(clean), "icc_with_flagged": icc_of(every),
           "icc_with_flagged_cases": len(every), "flagged_cases": [c.code for c in flagged],
           "note": f"ICC on {len(clean)} complete cases (every reader read it, no total leaves out a not-assessable "
                   f"item or unit); with the {len(flagged)} flagged totals: {len(every)} cases; "
                   f"{len(cases) - len(every)} cases miss a read."}
    clean_rows = [n for n, c in enumerate(cases) if c in clean]
    ba = agreement.bland_altman(values[clean_rows, 0], values[clean_rows, 1])
    out["bland_altman"] = {"readers": readers[:2], **vars(ba), "excluded_flagged": len(flagged)}
    out["bland_altman_cases"] = [c.code for c in clean]
    return out


def flagged_totals(cases: list[Case], scheme: Scheme, taxonomy: Taxonomy) -> list[dict]:
    """Every analysed read whose total leaves out a not-assessable unit or item (a flagged total).

    Returns
    -------
    list of dict
        ``case``, ``reader``, ``units_not_assessable`` (units left out of the
        total) and ``items_not_assessable`` (scored units whose score leaves
        out a not-assessable item).
    """
    out = []
    for case in sorted(cases, key=lambda c: c.code):
        reads = sorted(case.reads.items()) + ([(ADJUDICATED, case.adjudicated)] if case.adjudicated else [])
        for reader, read in reads:
            scores = scores_of(read, scheme, taxonomy)
            if not scores.complete:
                out.append({"case": case.code, "reader": reader, "units_not_assessable": scores.units_not_assessable,
                            "items_not_assessable": sum(u.status != UNIT_NOT_ASSESSABLE and not u.complete
                                                        for u in scores.units.values())})
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


def _item_agreement(cases, readers, scheme, taxonomy, scored, boot: dict) -> list[dict]:
    """Per scored item: over units any reader found a lesion in, each reader's unit grade."""
    out = []
    for item in scheme.items:
        if not item.scored:
            continue
        per_case = []
        for case in cases:
            units = {u for r in readers if (case.code, r) in scored
                     for u, s in scored[(case.code, r)].units.items() if s.lesions and item.id in s.items}
            rows = []
            for unit in sorted(units):
                row = []
                for reader in readers:
                    scores = scored.get((case.code, reader))
                    unit_score = scores.units.get(unit) if scores else None
                    if scores is None or (unit_score is not None and unit_score.status == UNIT_NOT_ASSESSABLE
                                          and not unit_score.lesions):
                        row.append(np.nan)
                    elif unit_score is None:
                        row.append(0.0)
                    else:
                        grade = unit_score.items.get(item.id)
                        row.append(np.nan if grade is None or grade == NOT_ASSESSABLE else float(grade))
                rows.append(row)
            if rows:
                per_case.append(np.array(rows, dtype=float))
        table = np.vstack(per_case) if per_case else np.zeros((0, len(readers)))
        categories = list(item.values)
        pairs = []
        for (i, a), (j, b) in itertools.combinations(enumerate(readers), 2):
            if len(table):
                pairs.append({"readers": [a, b], **_pair_kappas(table, per_case, i, j, categories, boot)})

        value = agreement.krippendorff_alpha(table, categories) if len(table) else float("nan")
        tallies = np.array([agreement.coincidence_tally(t, categories) for t in per_case])
        size = len(categories)

        def alpha(sums, size=size):
            return agreement.alpha_from_coincidence(sums, size)

        ci = agreement.case_bootstrap(tallies, alpha, **boot) if len(table) else None
        out.append({"item": item.id, "label": item.label, "targets": len(table), "pairs": pairs,
                    "krippendorff_alpha": value,
                    "krippendorff_alpha_ci": [ci.low, ci.high] if ci else [float("nan")] * 2})
    return out


def _pair_kappas(table: np.ndarray, per_case: list[np.ndarray], i: int, j: int, categories: list,
                 boot: dict) -> dict:
    """Weighted Cohen's kappas of readers i and j over the rows of ``table``, with case-bootstrap CIs.

    ``kappa_note`` says why a kappa is undefined (no unit graded by both, or every rating equal).
    """
    both = table[~np.isnan(table[:, i]) & ~np.isnan(table[:, j])][:, [i, j]]
    tallies = np.array([agreement.confusion_tally(t[:, [i, j]], categories) for t in per_case]).reshape(
        len(per_case), len(categories) ** 2)
    out: dict = {"n": len(both)}
    for weights in ("linear", "quadratic"):
        def stat(sums, weights=weights):
            return agreement.kappa_from_confusion(sums, len(categories), weights)

        out[f"kappa_{weights}"] = agreement.cohen_kappa(table[:, i], table[:, j], categories, weights)
        ci = agreement.case_bootstrap(tallies, stat, **boot)
        out[f"kappa_{weights}_ci"] = [ci.low, ci.high]
    if not len(both):
        out["kappa_note"] = "not computable: no bone unit graded by both readers"
    elif len(np.unique(both)) == 1:
        out["kappa_note"] = f"not computable: every rating is {int(both[0, 0])}"
    return out


def lesion_units(read: Read, taxonomy: Taxonomy) -> list[tuple[str, str, np.ndarray]]:
    """(lesion id, bone unit, position) of the placed lesions of a read."""
    out = []
    for lesion in read.lesions:
        if lesion.site_id and (lesion.side or not taxonomy.site(lesion.site_id).lateral):
            out.append((lesion.lesion_id, taxonomy.unit_id(lesion.site_id, lesion.side), np.array(lesion.position)))
    return out


def _lesion_agreement(cases, readers, scheme, taxonomy, threshold_mm, blocks, boot: dict) -> list[dict]:
    """Per reader pair: lesions matched (same unit and side, within ``threshold_mm``), specific agreement, features.

    Positive specific agreement counts lesions: a = matched pairs, b and c =
    lesions of one reader only. Negative specific agreement counts bone units
    neither reader marked (d) against the same b and c. Feature agreement
    compares the grades of each matched pair, item by item.
    """
    out = []
    scored_items = [i for i in scheme.items if i.scored]
    for (i, a), (j, b) in itertools.combinations(enumerate(readers), 2):
        per_case: list[tuple] = []
        unmatched: list[dict] = []
        grades: dict[str, list[np.ndarray]] = {item.id: [] for item in scored_items}
        for case in cases:
            if a not in case.reads or b not in case.reads:
                continue
            read_a, read_b = case.reads[a], case.reads[b]
            result = agreement.match_lesions(lesion_units(read_a, taxonomy), lesion_units(read_b, taxonomy),
                                             threshold_mm)
            pair = blocks[case.code][:, [i, j]]
            pair = pair[~np.isnan(pair).any(axis=1)]
            neither = int(((pair[:, 0] == 0) & (pair[:, 1] == 0)).sum())
            per_case.append((len(result.matched), len(result.only_a), len(result.only_b), neither))
            unmatched += [{"case": case.code, "reader": a, "lesion": lid} for lid in result.only_a]
            unmatched += [{"case": case.code, "reader": b, "lesion": lid} for lid in result.only_b]
            for item in scored_items:
                rows = [(_grade(read_a.lesion(x), item.id), _grade(read_b.lesion(y), item.id))
                        for x, y, _ in result.matched]
                grades[item.id].append(np.array(rows, dtype=float).reshape(len(rows), 2))
        specific = _specific(per_case, boot)
        features = [_feature_agreement(item, grades[item.id], boot) for item in scored_items]
        out.append({"readers": [a, b], "threshold_mm": threshold_mm, "cases": len(per_case),
                    "matched": specific["both"], "only_first": specific["only_first"],
                    "only_second": specific["only_second"], "agreed_negative_units": specific["neither"],
                    "psa": specific["psa"], "psa_ci": specific["psa_ci"], "nsa": specific["nsa"],
                    "nsa_ci": specific["nsa_ci"], "features": features, "unmatched": unmatched})
    return out


def _grade(lesion, item_id: str) -> float:
    value = lesion.grades.get(item_id)
    return float("nan") if value is None or value == NOT_ASSESSABLE else float(value)


def _feature_agreement(item, per_case: list[np.ndarray], boot: dict) -> dict:
    categories = list(item.values)
    tallies = np.array([agreement.confusion_tally(t, categories) for t in per_case]).reshape(
        len(per_case), len(categories) ** 2)
    total = tallies.sum(axis=0)
    out: dict = {"item": item.id, "label": item.label, "pairs_graded": int(total.sum())}
    for weights in ("linear", "quadratic"):
        def stat(sums, weights=weights):
            return agreement.kappa_from_confusion(sums, len(categories), weights)

        out[f"kappa_{weights}"] = float(stat(total)[0]) if total.sum() else float("nan")
        ci = agreement.case_bootstrap(tallies, stat, **boot)
        out[f"kappa_{weights}_ci"] = [ci.low, ci.high]
    return out


# -- clinical versus imaging -----------------------------------------------------------------------
CONCORDANCE_RULES = (
    "Counted as the cohort paper counts: painful sites (a bone site or a clinical region such as 'knee' or "
    "'SI joint', with its side) and imaging lesions, never merged into bone units. A painful site is confirmed "
    "when at least one imaging lesion lies in a bone unit it covers on the same side (midline units on either "
    "side); otherwise it is clinical only. An imaging lesion that lies in no unit covered by a painful site is "
    "subclinical. Per timepoint: each case's reference read against the clinical visit nearest its study date within the visit window; cases without clinical data are left out. "
    "Cumulative: per patient over every analysed timepoint; a painful site is counted once per patient (site and "
    "side), confirmed if a lesion at any timepoint lies in a unit it covers; lesions are counted per bone unit as "
    "the most lesions that unit held at one timepoint (a lesion seen at several timepoints counts once).")
SITE_COUNTS = ("sites", "sites_confirmed", "sites_clinical_only")
LESION_COUNTS = ("lesions", "lesions_in_painful_sites", "lesions_subclinical")


def concordance(cases: list[Case], source: str, taxonomy: Taxonomy,
                visit_window_days: int = VISIT_WINDOW_DAYS) -> dict:
    """Painful sites against imaging lesions, per timepoint and cumulative per patient.

    Parameters
    ----------
    cases : list of Case
        ``clinical_sites`` name taxonomy sites or clinical regions (with sides).
    source : str
        ``"adjudicated"`` or a reader: whose reads are the imaging.
    taxonomy : Taxonomy
        Resolves the painful sites (a read's lesions use the read's own taxonomy).
    visit_window_days : int
        The largest study-to-visit gap :func:`collect` accepted (stated in ``visit_rule``).

    Returns
    -------
    dict
        ``per_timepoint`` and ``cumulative``, each with per-case (per-patient)
        entries, ``totals`` (sites and lesions counted separately, see
        :data:`CONCORDANCE_RULES`) and ``groups`` (Table 2 rows); ``skipped``
        lists cases without a reference read or clinical data; ``missing_clinical``
        the cases left out for want of clinical data (never analysed as "no
        painful site"), per timepoint and cumulative; ``visit_gaps`` the
        study-to-visit gap of each analysed case.
    """
    entries, skipped, missing = [], [], []
    for case in sorted(cases, key=lambda c: (c.patient, c.timepoint, c.code)):
        read = reference_read(case, source)
        if case.clinical_sites is None:
            missing.append({"case": case.code, "patient": case.patient,
                            "why": case.clinical_missing or "no clinical record"})
        if read is None or case.clinical_sites is None:
            skipped.append({"case": case.code, "why": "no reference read" if read is None else "missing clinical data"})
            continue
        entries.append(_case_concordance(case, read, taxonomy))
    by_patient: dict[str, list[dict]] = {}
    for entry in entries:
        by_patient.setdefault(entry["patient"], []).append(entry)
    patients = [_patient_concordance(patient, series) for patient, series in sorted(by_patient.items())]
    analysed = {c.code for c in cases if c.code in {e["case"] for e in entries}}
    return {"source": source, "rules": CONCORDANCE_RULES, "skipped": skipped,
            "visit_rule": f"Clinical visit: the one nearest the study date, before or after, within "
                          f"{visit_window_days} days; a case with no visit in that window (or no linked record) "
                          f"has missing clinical data and is left out.",
            "visit_window_days": visit_window_days,
            "visit_gaps": [{"case": c.code, "gap_days": c.visit_gap_days} for c in sorted(cases, key=lambda c: c.code)
                           if c.code in analysed and c.visit_gap_days is not None],
            "missing_clinical": {
                "per_timepoint": {"count": len(missing), "cases": [{"case": m["case"], "why": m["why"]}
                                                                   for m in missing]},
                "cumulative": {"count": len(missing), "cases": [m["case"] for m in missing],
                               "patients": sorted({m["patient"] for m in missing} - set(by_patient))}},
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
        "clinical_cases": sum(case.clinical_sites is not None for case in cases),
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
#: The change of a lesion seen at both visits but graded at only one (or neither): no grade change can be said.
NOT_GRADED = "not graded"
#: Relative change of a measure that counts as improved (a fall) or worse (a rise); smaller changes are stable.
#: Largest diameter 20 % (as RECIST), volume 30 %, STIR lesion:muscle ratio 20 %.
MEASURE_CHANGE = {"size_mm": 0.2, "volume_ml": 0.3, "stir_muscle_ratio": 0.2}
MEASURES = ("grade", *MEASURE_CHANGE)


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


def measure_change(measure: str, before: float | None, after: float | None) -> str | None:
    """Improved / stable / worse of one measure of a lesion or unit seen at both visits (None: not measured).

    Grades compare as numbers (any fall is improved); size, volume and
    STIR ratio by their relative change against :data:`MEASURE_CHANGE`.
    """
    if before is None or after is None:
        return None
    if measure == "grade":
        return "improved" if after < before else "worse" if after > before else "stable"
    if before <= 0:
        return "worse" if after > 0 else "stable"
    relative = (after - before) / before
    threshold = MEASURE_CHANGE[measure]
    return "improved" if relative <= -threshold else "worse" if relative >= threshold else "stable"


def lesion_measures(lesion) -> dict[str, float | None]:
    """A lesion's measures at one visit: grade sum (assessable items), largest diameter, volume, STIR ratio."""
    graded = [v for v in lesion.grades.values() if v != NOT_ASSESSABLE]
    sizes = lesion.sizes_mm
    ratio = getattr(lesion, "stir_muscle_ratio", None)  # measured where the reader drew a lesion and a muscle ROI
    return {"grade": float(sum(graded)) if graded else None, "size_mm": max(sizes) if sizes else None,
            "volume_ml": lesion.volume_ml, "stir_muscle_ratio": None if ratio is None else float(ratio)}


def _unit_measures(lesions: list, score: int | None) -> dict[str, float | None]:
    """A bone unit's measures: its score; largest diameter, summed volume and highest ratio of its lesions
    (None when any of its lesions lacks the measure)."""
    per = [lesion_measures(l) for l in lesions]

    def combine(key: str, how) -> float | None:
        values = [m[key] for m in per]
        return how(values) if values and all(v is not None for v in values) else None

    return {"grade": None if score is None else float(score), "size_mm": combine("size_mm", max),
            "volume_ml": combine("volume_ml", sum), "stir_muscle_ratio": combine("stir_muscle_ratio", max)}


def tracked_pair(before: Read, after: Read) -> bool:
    """Whether two reads can be matched lesion by lesion: the later follows the earlier, or they share UIDs."""
    if after.followup is not None and after.followup.prior_read_id == before.read_id:
        return True
    return bool({l.tracking_uid for l in before.lesions if l.tracking_uid}
                & {l.tracking_uid for l in after.lesions if l.tracking_uid})


def lesion_changes(before: Read, after: Read, taxonomy: Taxonomy) -> list[dict]:
    """Per tracked lesion between two reads: new, resolved, or improved / stable / worse by each measure.

    The change by grades is the lesion's ``change``; ``by`` holds the change by
    every measure measured at both visits. A prior lesion the reader marked
    not assessable at the later visit gets change None (``status`` says why);
    a lesion present at both visits without an assessable grade at one of them
    gets :data:`NOT_GRADED` (a follow-up read is no longer submitted so, but
    older data and ungraded prior reads exist).
    """
    outcomes = after.followup.outcomes if after.followup is not None else {}
    earlier = {l.tracking_uid: l for l in before.lesions}
    later = {l.tracking_uid: l for l in after.lesions}
    rows = []
    for uid in [*earlier, *(u for u in later if u not in earlier)]:
        l0, l1 = earlier.get(uid), later.get(uid)
        lesion = l1 if l1 is not None else earlier[uid]
        by: dict[str, str] = {}
        row: dict[str, Any] = {"tracking_uid": uid, "unit": unit_of(lesion, taxonomy), "from": l0.lesion_id if l0 else None,
               "to": l1.lesion_id if l1 else None, "status": str(outcomes.get(uid, "")) or None, "by": by}
        if l0 is None:
            row["change"] = "new"
        elif l1 is None:
            row["change"] = None if outcomes.get(uid) == "not_assessable" else "resolved"
        else:
            m0, m1 = lesion_measures(l0), lesion_measures(l1)
            by.update({k: c for k in MEASURES if (c := measure_change(k, m0[k], m1[k])) is not None})
            row["change"] = by.get("grade", NOT_GRADED)
        row["measures"] = {"before": lesion_measures(l0) if l0 else None, "after": lesion_measures(l1) if l1 else None}
        rows.append(row)
    return rows


def followup(cases: list[Case], source: str, scheme: Scheme, taxonomy: Taxonomy, design: str | None = None) -> dict:
    """Per patient with several timepoints: lesion and unit changes between consecutive reads, totals over time.

    Lesions are matched by tracking UID where the later read follows the
    earlier one (carry-forward) or they share tracking UIDs; otherwise, as in
    unpaired blinded reading, by bone unit only (``matching`` of each step says
    which). Bone units change by score (new / resolved / improved / stable /
    worse) and, where measured at both visits, by size, volume and STIR ratio.
    """
    by_patient: dict[str, list[Case]] = {}
    for case in cases:
        by_patient.setdefault(case.patient, []).append(case)
    patients, overall = [], dict.fromkeys(CHANGE, 0)
    lesions_overall = dict.fromkeys(CHANGE, 0)
    for patient, series in sorted(by_patient.items()):
        read_cases = sorted(((c, r) for c in series if (r := reference_read(c, source)) is not None),
                            key=lambda pair: pair[0].timepoint)
        if len(read_cases) < 2:
            continue
        series = [c for c, _ in read_cases]
        reads = [r for _, r in read_cases]
        scores = [scores_of(r, scheme, taxonomy) for r in reads]
        steps = []
        for n in range(len(series) - 1):
            step = _followup_step(series[n], series[n + 1], reads[n], reads[n + 1], scores[n], scores[n + 1],
                                  taxonomy)
            for category, count in step["counts"].items():
                overall[category] += count
            for category, count in step["lesion_counts"].items():
                lesions_overall[category] += count
            steps.append(step)
        totals = [s.total for s in scores]
        patients.append({"patient": patient, "cases": [c.code for c in series],
                         "timepoints": [c.timepoint for c in series], "totals": totals,
                         "total_change": totals[-1] - totals[0], "steps": steps})
    return {"source": source, "design": design, "patients": patients, "counts": overall,
            "lesion_counts": lesions_overall, "thresholds": dict(MEASURE_CHANGE)}


def _followup_step(c0: Case, c1: Case, r0: Read, r1: Read, s0: ReadScores, s1: ReadScores,
                   taxonomy: Taxonomy) -> dict:
    counts = dict.fromkeys(CHANGE, 0)
    units = []
    lesions_in: dict[tuple[int, str], list] = {}
    for k, read in enumerate((r0, r1)):
        for lesion in read.lesions:
            unit = unit_of(lesion, taxonomy)
            if unit is not None:
                lesions_in.setdefault((k, unit), []).append(lesion)
    for unit in sorted(set(s0.units) | set(s1.units)):
        u0, u1 = s0.units.get(unit), s1.units.get(unit)
        score0, score1 = (u0.score if u0 else 0), (u1.score if u1 else 0)
        if score0 is None or score1 is None:
            continue  # not assessable at one timepoint: no change can be said
        category = unit_change(score0, score1)
        if category:
            counts[category] += 1
            entry = {"unit": unit, "before": score0, "after": score1, "change": category, "by": {}}
            if category not in ("new", "resolved"):
                m0 = _unit_measures(lesions_in.get((0, unit), []), score0)
                m1 = _unit_measures(lesions_in.get((1, unit), []), score1)
                entry["by"] = {k: c for k in MEASURES if (c := measure_change(k, m0[k], m1[k])) is not None}
            units.append(entry)
    tracked = tracked_pair(r0, r1)
    lesions = lesion_changes(r0, r1, taxonomy) if tracked else []
    lesion_counts = dict.fromkeys(CHANGE, 0)
    for row in lesions:
        if row["change"] in lesion_counts:
            lesion_counts[row["change"]] += 1
    return {"from": c0.code, "to": c1.code, "matching": "tracking UID" if tracked else "bone unit",
            "counts": counts, "units": units, "lesion_counts": lesion_counts, "lesions": lesions,
            "not_assessable": sum(row["status"] == "not_assessable" for row in lesions),
            "not_graded": sum(row["change"] == NOT_GRADED for row in lesions)}


# -- design (GRRAS) ---------------------------------------------------------------------------------
def design(cases: list[Case], scheme: Scheme, taxonomy: Taxonomy, study=None,
           resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[dict]:
    """The study design in the order of the GRRAS checklist (Kottner et al. 2011), items 2-4 and 6-12.

    Returns a list of {item, topic, text} entries; ``study`` (a ReadingStudy)
    adds the blinding settings.
    """
    readers = sorted({r for c in cases for r in c.reads})
    patients = sorted({c.patient for c in cases})
    timepoints = [sum(c.patient == p for c in cases) for p in patients]
    reads = {r: sum(r in c.reads for c in cases) for r in readers}
    analysed = [read for c in cases for read in (*c.reads.values(), *([c.adjudicated] if c.adjudicated else []))]
    later = sum(read.version > 1 for read in analysed)
    unit_marks_na = sum(m == UNIT_NOT_ASSESSABLE for read in analysed for m in read.unit_marks.values())
    lesions = [lesion for read in analysed for lesion in read.lesions]
    na_items = sum(v == NOT_ASSESSABLE for lesion in lesions for v in lesion.grades.values())
    scored = [scores_of(read, scheme, taxonomy) for read in analysed]
    na_lesions = sum(len(s.lesions_not_assessable) for s in scored)
    na_units = sum(s.units_not_assessable for s in scored)
    flagged = flagged_totals(cases, scheme, taxonomy)
    flagged_text = ", ".join(f"{f['case']} {f['reader']}" for f in flagged)
    blinding = "Readers see reading codes only (no names, IDs, dates, institutions or descriptions)"
    if study is not None:
        revealed = study.reveal_timepoints or study.design.value == "paired-chronological"
        shown = ("shown as visits A and B, which is earlier hidden" if study.design.value == "paired-hidden-order"
                 else "revealed" if revealed else "hidden (separate cases)")
        blinding += (f"; reading design {study.design.label}; age and sex "
                     f"{'shown' if study.show_age_sex else 'hidden'}; timepoints of one patient {shown}; "
                     f"each reader's worklist in its own random order (seed {study.seed})")
    return [
        {"item": 2, "topic": "Instrument", "text": f"{scheme.title} ({scheme.id} {scheme.version}); sites "
         f"{taxonomy.id} {taxonomy.version}, {len(all_units(taxonomy))} bone units."},
        {"item": 3, "topic": "Subjects", "text": f"{plural(len(cases), 'case')} (whole-body MRI "
         f"{'study' if len(cases) == 1 else 'studies'}) of {plural(len(patients), 'patient')}; timepoints per patient: {min(timepoints, default=0)} to {max(timepoints, default=0)}."},
        {"item": 4, "topic": "Raters", "text": f"{plural(len(readers), 'reader')} ({', '.join(readers) or 'none'}); "
         f"{plural(sum(c.adjudicated is not None for c in cases), 'case')} adjudicated."},
        {"item": 6, "topic": "Sample size", "text": f"Every case added to the reading study: {plural(len(cases), 'case')} x "
         f"{plural(len(readers), 'reader')} = {plural(len(cases) * len(readers), 'planned read')}; no replicate reads."},
        {"item": 7, "topic": "Sampling", "text": "Cases as added by the coordinator (the tool records no sampling "
         "frame)."},
        {"item": 8, "topic": "Rating process", "text": blinding + "; no clinical information is available to readers "
         "(the link key lives in a separate coordinator file)."},
        {"item": 9, "topic": "Independence", "text": "Readers read independently: each sees and exports only their "
         "own reads. Adjudicators see the readers' submitted reads (adjudication is not independent)."},
        {"item": 10, "topic": "Statistical analysis", "text": "Lesion presence per bone unit: Fleiss' and free-marginal "
         "(Randolph) kappa, overall and per bone category, on cases every reader read; positive and negative "
         "specific agreement per reader pair (bone units, and lesions matched within unit and side by distance); "
         "Cohen's weighted kappa of matched lesions' grades and of unit grades; Krippendorff's ordinal alpha; "
         "ICC(2,1) and ICC(3,1) of patient totals on complete cases and with flagged totals; Bland-Altman. "
         + (f"95 % intervals by case-level percentile bootstrap ({resamples} resamples, seed {seed})" if resamples
            else "No bootstrap intervals (0 resamples asked for)")
         + "; ICC intervals from the F distribution. Not assessable is missing, never 0."},
        {"item": 11, "topic": "Actual numbers", "text": "Submitted reads analysed: "
         + (", ".join(f"{r} {n} (missing {len(cases) - n})" for r, n in reads.items()) or "none")
         + f"; {later} analysed reads are a later version of a reopened read (each reader's latest submitted "
         f"version is used). Not assessable: {unit_marks_na} bone units marked, {na_units} units in total "
         f"(marked or with only not-assessable lesions), {na_lesions} lesions, {na_items} lesion item grades. "
         f"Flagged totals (leave out a not-assessable item or unit): {len(flagged)}"
         + (f" ({flagged_text})" if flagged else "") + "; they are left out of the complete-case ICC and the "
         "Bland-Altman plot."},
        {"item": 12, "topic": "Rater and subject characteristics", "text": "Not recorded by the tool (training and "
         "experience of the readers belong in the study protocol)."},
    ]

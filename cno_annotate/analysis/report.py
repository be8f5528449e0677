"""Reports of a reading study: JSON, CSV tables, PNG/SVG figures and one HTML file.

The HTML report is self-contained (figures embedded as base64 PNG, no
scripts, no network). Reports name cases by reading code and patients by
pseudonymous patient code only.
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cno_annotate import __version__
from cno_annotate.analysis import cohort, figures
from cno_annotate.annotation.csv_export import write_csv
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.errors import CnoError
from cno_annotate.fileio import atomic_write_text

SECTIONS = ("design", "agreement", "concordance", "distribution", "followup", "skeleton")


def build(cases: list[cohort.Case], sections: list[str], scheme_ref: tuple[str, str], source: str,
          threshold_mm: float, out: Path, strict: bool = True, study=None,
          resamples: int = cohort.BOOTSTRAP_RESAMPLES, seed: int = cohort.BOOTSTRAP_SEED,
          visit_window_days: int = cohort.VISIT_WINDOW_DAYS) -> dict:
    """Compute the sections, write figures and tables under ``out``; return the report as a dict.

    With ``strict`` (one section asked for), a section that cannot be
    computed raises :class:`CnoError`; otherwise (``report all``) it is left
    out and ``report["absent"]`` says why.
    """
    scheme, taxonomy = load_scheme(*scheme_ref), load_taxonomy()
    report: dict = {"generator": f"cno-annotate {__version__}", "scheme": scheme.ref, "source": source,
                    "cases": len(cases), "sections": {}, "absent": {}}
    figs = out / "figures"
    def design_section(*_) -> dict:
        return {"grras": cohort.design(cases, scheme, taxonomy, study, resamples, seed)}

    def agreement_section(cases, source, scheme, taxonomy, threshold_mm, figs) -> dict:
        return _agreement_section(cases, source, scheme, taxonomy, threshold_mm, figs, resamples, seed)

    def concordance_section(cases, source, scheme, taxonomy, threshold_mm, figs) -> dict:
        return _concordance_section(cases, source, scheme, taxonomy, threshold_mm, figs, visit_window_days)

    def followup_section(cases, source, scheme, taxonomy, threshold_mm, figs) -> dict:
        return _followup_section(cases, source, scheme, taxonomy, threshold_mm, figs, study)

    builders = {"design": design_section, "agreement": agreement_section, "concordance": concordance_section,
                "distribution": _distribution_section, "followup": followup_section, "skeleton": _skeletons}
    for name in SECTIONS:
        if name not in sections:
            continue
        try:
            report["sections"][name] = builders[name](cases, source, scheme, taxonomy, threshold_mm, figs)
        except CnoError as exc:
            if strict:
                raise
            report["absent"][name] = str(exc)
    report["flagged_cases"] = cohort.flagged_totals(cases, scheme, taxonomy)
    write_tables(report, out)
    return report


def _agreement_section(cases, source, scheme, taxonomy, threshold_mm, figs: Path, resamples: int = 1000,
                       seed: int = 0) -> dict:
    readers = sorted({r for c in cases for r in c.reads})
    result = cohort.agreement_report(cases, readers, scheme, taxonomy, threshold_mm, resamples, seed)
    ba = result["totals"].get("bland_altman")
    if ba:
        values = result["totals"]["values"]
        used = result["totals"]["bland_altman_cases"]  # flagged totals are left out
        a = np.array([values[code][ba["readers"][0]] for code in used], float)
        b = np.array([values[code][ba["readers"][1]] for code in used], float)
        result["figures"] = {"bland_altman": figures.save(
            figures.bland_altman_figure(a, b, ba["readers"], ba), figs, "bland_altman")}
    return result


def _require_reference(cases, source: str) -> None:
    if not any(cohort.reference_read(c, source) is not None for c in cases):
        what = "adjudicated reads" if source == cohort.ADJUDICATED else f"submitted reads of {source}"
        raise CnoError(f"no case has {what}")


def _concordance_section(cases, source, scheme, taxonomy, threshold_mm, figs: Path,
                         visit_window_days: int = cohort.VISIT_WINDOW_DAYS) -> dict:
    if all(c.clinical_sites is None and c.clinical_missing is None for c in cases):
        raise CnoError("concordance needs clinical records: give --link-key with linked, imported records")
    _require_reference(cases, source)
    result = cohort.concordance(cases, source, taxonomy, visit_window_days)
    result["figures"] = {"concordance": figures.save(figures.concordance_figure(result), figs, "concordance")}
    return result


def _distribution_section(cases, source, scheme, taxonomy, threshold_mm, figs: Path) -> dict:
    _require_reference(cases, source)
    result = cohort.distribution(cases, source, taxonomy)
    result["figures"] = {"distribution": figures.save(figures.distribution_figure(result), figs, "distribution")}
    return result


def _followup_section(cases, source, scheme, taxonomy, threshold_mm, figs: Path, study=None) -> dict:
    _require_reference(cases, source)
    result = cohort.followup(cases, source, scheme, taxonomy, None if study is None else study.design.value)
    if not result["patients"]:
        raise CnoError("no patient has reference reads at two or more timepoints")
    result["figures"] = {"followup": figures.save(figures.followup_figure(result), figs, "followup")}
    return result


def _skeletons(cases, source, scheme, taxonomy, threshold_mm, figs: Path) -> dict:
    _require_reference(cases, source)
    cohort_counts: dict = {}
    per_case = {}
    for case in cases:
        read = cohort.reference_read(case, source)
        if read is None:
            continue
        counts: dict = {}
        for lesion in read.lesions:
            if lesion.site_id:
                key = (lesion.site_id, lesion.side if taxonomy.site(lesion.site_id).lateral else None)
                if key[1] is None and taxonomy.site(lesion.site_id).lateral:
                    continue
                counts[key] = counts.get(key, 0) + 1
                cohort_counts[key] = cohort_counts.get(key, 0) + 1
        per_case[case.code] = counts
    out = {"cohort": {f"{s}:{side}" if side else s: n for (s, side), n in sorted(cohort_counts.items(), key=str)},
           "figures": {"cohort": figures.save(figures.skeleton_figure(
               cohort_counts, taxonomy, f"Lesions of {_count(len(per_case), 'case')}", "lesions (cohort)"), figs, "skeleton_cohort")}}
    if per_case:
        code = sorted(per_case)[0]
        out["example_case"] = code
        out["figures"]["case"] = figures.save(figures.skeleton_figure(
            per_case[code], taxonomy, f"Case {code}", "lesions"), figs, f"skeleton_{code}")
    return out


# -- tables ------------------------------------------------------------------------------------
def table_rows(report: dict) -> dict[str, tuple[list[str], list[dict]]]:
    """The report's tables as (columns, rows), by file name."""
    tables = {}
    sections = report["sections"]
    if "agreement" in sections:
        tables["agreement.csv"] = (["statistic", "target", "unit", "readers", "value", "ci_low", "ci_high", "n"],
                                   agreement_rows(sections["agreement"]))
    if "concordance" in sections:
        c = sections["concordance"]
        for basis in ("per_timepoint", "cumulative"):
            summary = c[basis]
            tables[f"concordance_{basis}_groups.csv"] = (["group", "label", "parent", *cohort.SITE_COUNTS,
                                                          *cohort.LESION_COUNTS], summary["groups"])
            tables[f"concordance_{basis}_sites.csv"] = (
                [summary["unit_of_analysis"], "site", "side", "label", "units", "confirmed", "lesions"],
                [{summary["unit_of_analysis"]: e[summary["unit_of_analysis"]], **site, "units": " ".join(site["units"]),
                  "lesions": " ".join(site["lesions"])} for e in summary["entries"] for site in e["sites"]])
            tables[f"concordance_{basis}_lesions.csv"] = (
                [summary["unit_of_analysis"], "lesion", "unit", "group", "subclinical"],
                [{summary["unit_of_analysis"]: e[summary["unit_of_analysis"]], **lesion}
                 for e in summary["entries"] for lesion in e["lesions"]])
    if "distribution" in sections:
        tables["distribution.csv"] = (["group", "label", "parent", "clinical_n", "clinical_pct", "radiological_n",
                                       "radiological_pct"], sections["distribution"]["rows"])
    if "followup" in sections:
        rows = [{"patient": p["patient"], "from": s["from"], "to": s["to"], **u}
                for p in sections["followup"]["patients"] for s in p["steps"] for u in s["units"]]
        rows = [{**r, "by": " ".join(f"{k}:{v}" for k, v in r["by"].items())} for r in rows]
        tables["followup_units.csv"] = (["patient", "from", "to", "unit", "before", "after", "change", "by"], rows)
        lesion_rows = [{"patient": p["patient"], "from_case": s["from"], "to_case": s["to"],
                        "tracking_uid": r["tracking_uid"], "unit": r["unit"], "from_lesion": r["from"],
                        "to_lesion": r["to"], "status": r["status"], "change": r["change"],
                        "by": " ".join(f"{k}:{v}" for k, v in r["by"].items())}
                       for p in sections["followup"]["patients"] for s in p["steps"] for r in s["lesions"]]
        tables["followup_lesions.csv"] = (["patient", "from_case", "to_case", "tracking_uid", "unit", "from_lesion",
                                           "to_lesion", "status", "change", "by"], lesion_rows)
        tables["followup_patients.csv"] = (["patient", "cases", "totals", "total_change"],
                                           [{**p, "cases": " ".join(p["cases"]),
                                             "totals": " ".join(str(t) for t in p["totals"])}
                                            for p in sections["followup"]["patients"]])
    return tables


def write_tables(report: dict, out: Path) -> list[Path]:
    """Write every table as CSV (atomically)."""
    paths = []
    for name, (columns, rows) in table_rows(report).items():
        paths.append(write_csv(out / name, columns, rows))  # formula cells neutralised
    return paths


def write_json(report: dict, out: Path) -> Path:
    """The report as JSON (figures by path, not embedded)."""
    return atomic_write_text(out / "report.json", json.dumps(_without_embedded(report), indent=2, default=_json,
                                                                 allow_nan=False) + "\n")


def _without_embedded(value):
    if isinstance(value, dict):
        return {k: _without_embedded(v) for k, v in value.items() if k != "png_base64"}
    if isinstance(value, list):
        return [_without_embedded(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None  # strict JSON: an undefined statistic is null, never NaN
    return value


def _json(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))


# -- HTML -----------------------------------------------------------------------------------------
def write_html(report: dict, title: str, out: Path) -> Path:
    """One self-contained HTML file: tables, and figures embedded as PNG."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{html.escape(report['generator'])} · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · "
             f"scheme {report['scheme']['id']} {report['scheme']['version']} · {_count(report['cases'], 'case')} · "
             f"reference read: {html.escape(report['source'])}</p>"]
    if report.get("design"):
        parts.append(f"<p class='meta'>Reading design: {html.escape(report['design']['text'])}</p>")
    if report.get("reads_changed_outside_the_program"):
        changed = ", ".join(report["reads_changed_outside_the_program"])
        parts.append(f"<p><strong>Included on request (--include-tampered): reads changed outside the program "
                     f"since their last audited change: {html.escape(changed)}</strong></p>")
    s = report["sections"]
    if "design" in s:
        parts.append("<h2>Design (GRRAS checklist order)</h2>" + _table(
            ["GRRAS item", "topic", "this study"], [[d["item"], d["topic"], d["text"]] for d in s["design"]["grras"]]))
    if "agreement" in s:
        parts.append(_agreement_html(s["agreement"]))
    if "concordance" in s:
        parts.append(_concordance_html(s["concordance"]))
    if "distribution" in s:
        parts.append(_distribution_html(s["distribution"]))
    if "followup" in s:
        parts.append(_followup_html(s["followup"]))
    if report.get("absent"):
        parts.append("<h2>Sections not computed</h2>" + _table(
            ["section", "why"], [[name, why] for name, why in report["absent"].items()]))
    if "skeleton" in s:
        sk = s["skeleton"]
        parts.append("<h2>Skeleton map</h2><div class='row'>" + "".join(_img(f) for f in sk["figures"].values()) + "</div>")
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
td.sub {{ padding-left: 1.8em; color: #555; }}
.meta {{ color: #666; }} img {{ max-width: 100%; }} .row {{ display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }}
</style></head><body>
{"".join(parts)}
</body></html>
"""
    return atomic_write_text(out / "report.html", document)


def _img(figure: dict) -> str:
    return f"<img alt='figure' src='data:image/png;base64,{figure['png_base64']}'>"


_count = cohort.plural


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list], sub: list[bool] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for n, row in enumerate(rows):
        cells = "".join(f"<td{' class=sub' if (sub and sub[n] and i == 0) else ''}>{html.escape(str(c))}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ci(pair) -> str:
    low, high = pair
    return f"{_num(low, 2)} to {_num(high, 2)}"


def agreement_rows(a: dict) -> list[dict]:
    """Every agreement statistic as one table row (statistic, target, unit of analysis, CI, n)."""
    p = a["unit_presence"]
    rows = [{"statistic": k, "target": "lesion present", "unit": "bone units", "value": p[k],
             "ci_low": p[f"{k}_ci"][0], "ci_high": p[f"{k}_ci"][1], "n": p["targets_used"]}
            for k in ("fleiss_kappa", "randolph_kappa")]
    for c in a["unit_presence_by_category"]:
        rows += [{"statistic": k, "target": f"lesion present: {c['label']}", "unit": "bone units", "value": c[k],
                  "ci_low": c[f"{k}_ci"][0], "ci_high": c[f"{k}_ci"][1], "n": c["targets_used"]}
                 for k in ("fleiss_kappa", "randolph_kappa")]
    for x in a["unit_specific_agreement"]:
        for k, name in (("psa", "positive_specific_agreement"), ("nsa", "negative_specific_agreement")):
            rows.append({"statistic": name, "target": "lesion present", "unit": "bone units",
                         "readers": " vs ".join(x["readers"]), "value": x[k], "ci_low": x[f"{k}_ci"][0],
                         "ci_high": x[f"{k}_ci"][1], "n": x["both"] + x["only_first"] + x["only_second"] + x["neither"]})
    for x in a["lesions"]:
        for k, name in (("psa", "positive_specific_agreement"), ("nsa", "negative_specific_agreement")):
            rows.append({"statistic": name, "target": "matched lesions", "unit": "lesions (negatives: bone units)",
                         "readers": " vs ".join(x["readers"]), "value": x[k], "ci_low": x[f"{k}_ci"][0],
                         "ci_high": x[f"{k}_ci"][1], "n": x["matched"] + x["only_first"] + x["only_second"]})
        for f in x["features"]:
            for w in ("linear", "quadratic"):
                rows.append({"statistic": f"cohen_kappa_{w}", "target": f["item"], "unit": "matched lesion pairs",
                             "readers": " vs ".join(x["readers"]), "value": f[f"kappa_{w}"],
                             "ci_low": f[f"kappa_{w}_ci"][0], "ci_high": f[f"kappa_{w}_ci"][1],
                             "n": f["pairs_graded"]})
    for item in a["items"]:
        rows.append({"statistic": "krippendorff_alpha", "target": item["item"], "unit": "bone units with a lesion",
                     "value": item["krippendorff_alpha"], "ci_low": item["krippendorff_alpha_ci"][0],
                     "ci_high": item["krippendorff_alpha_ci"][1], "n": item["targets"]})
        for pair in item["pairs"]:
            for w in ("linear", "quadratic"):
                rows.append({"statistic": f"cohen_kappa_{w}", "target": item["item"], "unit": "bone units with a lesion",
                             "readers": " vs ".join(pair["readers"]), "value": pair[f"kappa_{w}"],
                             "ci_low": pair[f"kappa_{w}_ci"][0], "ci_high": pair[f"kappa_{w}_ci"][1], "n": pair["n"]})
    t = a["totals"]
    for key, label, n in (("icc", "patient total (complete cases)", t["icc_cases"]),
                          ("icc_with_flagged", "patient total (with flagged totals)", t["icc_with_flagged_cases"])):
        for icc in t[key]:
            rows.append({"statistic": icc["kind"], "target": label, "unit": "cases", "value": icc["value"],
                         "ci_low": icc["ci_low"], "ci_high": icc["ci_high"], "n": n})
    return rows


def _agreement_html(a: dict) -> str:
    p = a["unit_presence"]
    boot = a["bootstrap"]
    m = a["missing"]
    parts = [f"<h2>Agreement between readers</h2><p>Readers: {html.escape(', '.join(a['readers']))}; submitted reads: "
             + ", ".join(f"{html.escape(r)} {n}" for r, n in a["reads"].items()) + ". "
             + (f"95 % confidence intervals: case-level bootstrap, {boot['resamples']} resamples, seed {boot['seed']} "
                f"(whole cases resampled: the units of one child are not independent)." if boot["resamples"] else
                "No confidence intervals (--bootstrap 0): kappa, alpha and specific agreement intervals show as –.")
             + " ICC intervals: F-distribution (Shrout and Fleiss; McGraw and Wong).</p>",
             f"<p>{html.escape(m['fleiss_note'])}"
             + ("" if not m["cases_missing_a_read"] else " Dropped: " + ", ".join(
                 html.escape(f"{x['case']} (no read of {', '.join(x['missing'])})") for x in m["cases_missing_a_read"]))
             + "</p>",
             "<h3>Lesion present per bone unit (unit: bone units)</h3>",
             "<p>Over all bone units the agreed negatives dominate; see the kappa per bone category and the specific "
             "agreement below.</p>",
             _table(["statistic", "value", "95 % CI", "bone units", "cases"],
                    [["Fleiss' kappa", _num(p["fleiss_kappa"]), _ci(p["fleiss_kappa_ci"]), p["targets_used"], p["cases"]],
                     ["Free-marginal (Randolph) kappa", _num(p["randolph_kappa"]), _ci(p["randolph_kappa_ci"]),
                      p["targets_used"], p["cases"]]]),
             "<h3>Kappa per bone category (unit: bone units of the category)</h3>",
             _table(["category", "bone units", "Fleiss' kappa", "95 % CI", "Randolph kappa", "95 % CI"],
                    [[c["label"], c["targets_used"], _num(c["fleiss_kappa"]), _ci(c["fleiss_kappa_ci"]),
                      _num(c["randolph_kappa"]), _ci(c["randolph_kappa_ci"])] for c in a["unit_presence_by_category"]]),
             "<h3>Specific agreement per bone unit (unit: bone units)</h3>",
             _table(["readers", "both", "one only", "other only", "neither", "positive (PSA)", "95 % CI",
                     "negative (NSA)", "95 % CI"],
                    [[" vs ".join(x["readers"]), x["both"], x["only_first"], x["only_second"], x["neither"],
                      _num(x["psa"]), _ci(x["psa_ci"]), _num(x["nsa"]), _ci(x["nsa_ci"])]
                     for x in a["unit_specific_agreement"]]),
             "<h3>Lesions matched between readers (unit: lesions; negatives: bone units neither reader marked)</h3>",
             _table(["readers", "distance limit (mm)", "matched (lesion pairs)", "first only (lesions)",
                     "second only (lesions)", "agreed negative (bone units)", "PSA", "95 % CI", "NSA", "95 % CI"],
                    [[" vs ".join(x["readers"]), x["threshold_mm"], x["matched"], x["only_first"], x["only_second"],
                      x["agreed_negative_units"], _num(x["psa"]), _ci(x["psa_ci"]), _num(x["nsa"]), _ci(x["nsa_ci"])]
                     for x in a["lesions"]]),
             "<h3>Feature agreement on matched lesions (unit: matched lesion pairs)</h3>",
             _table(["item", "readers", "pairs graded", "weighted kappa (linear)", "95 % CI",
                     "weighted kappa (quadratic)", "95 % CI"],
                    [[f["label"], " vs ".join(x["readers"]), f["pairs_graded"], _num(f["kappa_linear"]),
                      _ci(f["kappa_linear_ci"]), _num(f["kappa_quadratic"]), _ci(f["kappa_quadratic_ci"])]
                     for x in a["lesions"] for f in x["features"]]),
             "<h3>Scheme items per bone unit (unit: bone units any reader found a lesion in)</h3>"]
    rows = []
    for item in a["items"]:
        for pair in item["pairs"]:
            note = pair.get("kappa_note")
            rows.append([item["label"], " vs ".join(pair["readers"]), pair["n"],
                         note or _num(pair["kappa_linear"]), "" if note else _ci(pair["kappa_linear_ci"]),
                         note or _num(pair["kappa_quadratic"]), "" if note else _ci(pair["kappa_quadratic_ci"]),
                         _num(item["krippendorff_alpha"]), _ci(item["krippendorff_alpha_ci"])])
    parts.append(_table(["item", "readers", "bone units", "weighted kappa (linear)", "95 % CI",
                         "weighted kappa (quadratic)", "95 % CI", "Krippendorff's alpha (ordinal, all readers)",
                         "95 % CI"], rows))
    t = a["totals"]
    parts.append("<h3>Patient totals (unit: cases)</h3>")
    parts.append(f"<p>{html.escape(t['note'])}"
                 + (f" Flagged: {html.escape(', '.join(t['flagged_cases']))}." if t["flagged_cases"] else "") + "</p>")
    iccs = [(f"{i['kind']} {label}", n, i) for key, label, n in (
        ("icc", "complete cases", t["icc_cases"]), ("icc_with_flagged", "with flagged totals", t["icc_with_flagged_cases"]))
        for i in t[key]]
    parts.append(_table(["ICC", "cases used", "value", "95 % CI"],
                        [[name, n, _num(i["value"]), f"{_num(i['ci_low'], 2)} to {_num(i['ci_high'], 2)}"]
                         for name, n, i in iccs]))
    notes = [f"{name}: {i['note']}" for name, _, i in iccs if i["note"]]
    if notes:
        parts.append("<p>" + "<br>".join(html.escape(note) for note in notes) + "</p>")
    ba = t["bland_altman"]
    flagged = t["flagged_cases"]
    parts.append(f"<p>Bland-Altman: {_count(len(t['bland_altman_cases']), 'case')}; "
                 f"{_count(ba['excluded_flagged'], 'flagged case')} left out"
                 + (f" ({html.escape(', '.join(flagged))})" if flagged else "") + ".</p>")
    if a.get("figures"):
        parts.append(_img(a["figures"]["bland_altman"]))
    unmatched = [u for x in a["lesions"] for u in x["unmatched"]]
    if unmatched:
        parts.append("<p>Unmatched lesions: " + ", ".join(
            html.escape(f"{u['case']} {u['reader']} {u['lesion']}") for u in unmatched) + "</p>")
    return "".join(parts)


def _concordance_html(c: dict) -> str:
    parts = ["<h2>Clinical and imaging concordance (painful sites and imaging lesions)</h2>",
             f"<p>{html.escape(c['rules'])} {_count(len(c['skipped']), 'case')} skipped"
             + (": " + ", ".join(html.escape(f"{s['case']} ({s['why']})") for s in c["skipped"]) if c["skipped"] else "")
             + ".</p>"]
    if "visit_rule" in c:
        gaps = ", ".join(f"{g['case']} {g['gap_days']} days" for g in c["visit_gaps"]) or "none"
        parts.append(f"<p>{html.escape(c['visit_rule'])} Study-to-visit gaps used: {html.escape(gaps)}.</p>")
        for basis, label in (("per_timepoint", "per timepoint"), ("cumulative", "cumulative")):
            m = c["missing_clinical"][basis]
            listed = (", ".join(f"{x['case']} ({x['why']})" for x in m["cases"]) if basis == "per_timepoint"
                      else ", ".join(m["cases"]) + (f"; patients left out entirely: {', '.join(m['patients'])}"
                                                     if m["patients"] else ""))
            parts.append(f"<p>Missing clinical data ({label}): {_count(m['count'], 'case')}"
                         + (f": {html.escape(listed)}" if m["count"] else "") + ".</p>")
    for basis, title in (("cumulative", "Cumulative over each patient's timepoints (unit: patients)"),
                         ("per_timepoint", "Per timepoint (unit: cases, each on its own)")):
        summary = c[basis]
        t = summary["totals"]
        parts.append(f"<h3>{title}</h3><p>{t['sites']} painful sites: {t['sites_confirmed']} confirmed on imaging, "
                     f"{t['sites_clinical_only']} clinical only. {t['lesions']} imaging lesions: "
                     f"{t['lesions_in_painful_sites']} in a painful site, {t['lesions_subclinical']} subclinical.</p>")
        rows = [[g["label"], g["sites"], g["sites_confirmed"], g["sites_clinical_only"], g["lesions"],
                 g["lesions_in_painful_sites"], g["lesions_subclinical"]] for g in summary["groups"]]
        sub = [g["parent"] is not None for g in summary["groups"]]
        parts.append(_table(["site group", "painful sites (sites)", "confirmed (sites)", "clinical only (sites)",
                             "imaging lesions (lesions)", "in a painful site (lesions)", "subclinical (lesions)"],
                            rows, sub))
    parts.append(_img(c["figures"]["concordance"]))
    return "".join(parts)


def _distribution_html(d: dict) -> str:
    rows, sub = [], []
    for r in d["rows"]:
        if r["clinical_n"] or r["radiological_n"]:
            rows.append([r["label"], r["clinical_n"], f"{r['clinical_pct']:.0f} %", r["radiological_n"],
                         f"{r['radiological_pct']:.0f} %"])
            sub.append(r["parent"] is not None)
    lpp = d["lesions_per_patient"]
    return "".join([
        "<h2>Distribution of painful sites and lesions</h2>",
        f"<p>{_clinical_count(d)} and {d['total_radiological']} lesions (radiological). "
        f"Lesions per patient "
        f"(first timepoint): mean {_num(lpp['mean'], 1)}, range {lpp['min']}-{lpp['max']}; unifocal {d['unifocal']}, "
        f"multifocal {d['multifocal']}; symmetric {d['symmetric']}, asymmetric {d['asymmetric']}.</p>",
        _table(["site group", "clinical (painful sites)", "% of sites", "radiological (lesions)", "% of lesions"],
               rows, sub),
        _img(d["figures"]["distribution"]),
    ])


def _clinical_count(d: dict) -> str:
    """How many painful sites were counted, or that no case had clinical data (then there is nothing to count)."""
    if not d.get("clinical_cases", 1):
        return "no clinical data (painful sites not counted)"
    return f"{d['total_clinical']} painful sites (clinical)"


def _followup_html(f: dict) -> str:
    rows = [[p["patient"], " → ".join(p["cases"]), " → ".join(str(t) for t in p["totals"]), p["total_change"]]
            for p in f["patients"]]
    counts = f["counts"]
    by_unit = sum(s.get("matching") == "bone unit" for p in f["patients"] for s in p["steps"])
    return "".join([
        "<h2>Follow-up (unit: patients; changes counted in bone units; totals in points)</h2>",
        "<p>Bone units between consecutive timepoints: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".</p>",
        "<p>Lesions matched by tracking UID (carried forward by the reader): "
        + ", ".join(f"{k} {v}" for k, v in f.get("lesion_counts", {}).items())
        + f"; steps matched by bone unit only (reads without shared tracking UIDs): {by_unit}. Size, volume and "
        f"STIR lesion:muscle ratio count as improved or worse from a relative change of "
        + ", ".join(f"{k.split('_')[0]} {v:.0%}" for k, v in f.get("thresholds", {}).items()) + ".</p>"
        + (f"<p>Reading design: {html.escape(f['design'])}.</p>" if f.get("design") else ""),
        _table(["patient", "cases", "total score (points)", "change (points)"], rows),
        _img(f["figures"]["followup"]),
    ])


def run(store, name: str, sections: list[str], out: Path, link_key: Path | None = None, source: str = "adjudicated",
        threshold_mm: float = 20.0, strict: bool = True, resamples: int = cohort.BOOTSTRAP_RESAMPLES,
        seed: int = cohort.BOOTSTRAP_SEED, visit_window_days: int = cohort.VISIT_WINDOW_DAYS,
        include_tampered: bool = False) -> dict:
    """Build a reading study's report into ``out`` (JSON, CSV, figures, HTML).

    The reads it uses are checked against the audit trail first; reads changed
    outside the program refuse the report unless ``include_tampered``, and are
    then listed in ``reads_changed_outside_the_program``.

    Raises
    ------
    TamperedReads
        If a read the report uses differs from its audited state (and not ``include_tampered``).
    """
    from cno_annotate import reading_study as rs
    from cno_annotate.clinical import CoordinatorDB
    from cno_annotate.export_reads import TamperedReads, unaudited_reads

    study = rs.get(store, name)
    db = CoordinatorDB.open(link_key) if link_key else None
    cases = cohort.collect(store, name, db, visit_window_days)
    changed = unaudited_reads(store, [r.read_id for c in cases for r in (*c.reads.values(), c.adjudicated) if r])
    if changed and not include_tampered:
        raise TamperedReads(f"{'read' if len(changed) == 1 else 'reads'} {', '.join(changed)} of {name} "
                            f"{'was' if len(changed) == 1 else 'were'} changed outside the program since the last "
                            f"audited change (audit verify finds it), so no report was built; run cno-annotate store "
                            f"check, or give --include-tampered to build it with them (the report names them)", changed)
    out.mkdir(parents=True, exist_ok=True)
    report = build(cases, sections, (study.scheme_id, study.scheme_version), source, threshold_mm, out, strict,
                   study=study, resamples=resamples, seed=seed, visit_window_days=visit_window_days)
    report["reading_study"] = name
    report["design"] = {"id": study.design.value, "text": study.design.label}
    report["reads_changed_outside_the_program"] = changed
    write_json(report, out)
    write_html(report, f"Reading study {name}", out)
    return report

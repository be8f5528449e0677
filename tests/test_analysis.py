"""Cohort analysis: statistics against reference libraries, exact tables on a known cohort, the HTML report."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cno_annotate.analysis import agreement, cohort, report
from cno_annotate.analysis.cohort import Case
from cno_annotate.annotation.model import Lesion, Read
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import load_taxonomy


def datasets():
    """Several synthetic rating sets: (targets, raters) with grades 0-3, some with missing values and ties."""
    rng = np.random.default_rng(20)
    out = []
    for n, k, missing in ((30, 3, 0.0), (25, 2, 0.1), (40, 4, 0.15), (12, 3, 0.0)):
        truth = rng.integers(0, 4, n)
        ratings = np.clip(truth[:, None] + rng.integers(-1, 2, (n, k)), 0, 3).astype(float)
        ratings[rng.random((n, k)) < missing] = np.nan
        out.append(ratings)
    tied = np.array([[1, 1, 1], [2, 2, 2], [2, 2, 1], [0, 0, 0], [3, 3, 3], [1, 1, 1], [2, 2, 2], [0, 1, 0]], float)
    out.append(tied)
    return out


@pytest.mark.parametrize("ratings", datasets())
def test_fleiss_and_randolph_kappa_match_statsmodels_and_the_textbook_formula(ratings):
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    complete = ratings[~np.isnan(ratings).any(axis=1)].astype(int)
    table, _ = aggregate_raters(complete)
    for method in ("fleiss", "randolph"):
        assert agreement.fleiss_kappa(ratings, method) == pytest.approx(fleiss_kappa(table, method=method), abs=1e-9)
    n, k = complete.shape
    p_j = table.sum(axis=0) / (n * k)
    p_i = ((table**2).sum(axis=1) - k) / (k * (k - 1))
    textbook = (p_i.mean() - (p_j**2).sum()) / (1 - (p_j**2).sum())
    assert agreement.fleiss_kappa(ratings) == pytest.approx(textbook, abs=1e-9)
    randolph = (p_i.mean() - 1 / table.shape[1]) / (1 - 1 / table.shape[1])
    assert agreement.fleiss_kappa(ratings, "randolph") == pytest.approx(randolph, abs=1e-9)


@pytest.mark.parametrize("ratings", datasets())
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_weighted_cohen_kappa_matches_scikit_learn(ratings, weights):
    from sklearn.metrics import cohen_kappa_score

    a, b = ratings[:, 0], ratings[:, 1]
    keep = ~(np.isnan(a) | np.isnan(b))
    expected = cohen_kappa_score(a[keep], b[keep], labels=[0, 1, 2, 3], weights=weights)
    assert agreement.cohen_kappa(a, b, [0, 1, 2, 3], weights) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("ratings", datasets())
def test_krippendorff_alpha_matches_the_package(ratings):
    import krippendorff

    expected = krippendorff.alpha(reliability_data=ratings.T, level_of_measurement="ordinal", value_domain=[0, 1, 2, 3])
    assert agreement.krippendorff_alpha(ratings, [0, 1, 2, 3]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.dropna")  # inside pingouin
@pytest.mark.parametrize("ratings", datasets())
def test_icc_matches_pingouin(ratings):
    import pingouin

    long = pd.DataFrame([(t, r, ratings[t, r]) for t in range(ratings.shape[0]) for r in range(ratings.shape[1])],
                        columns=["target", "rater", "score"])
    table = pingouin.intraclass_corr(long, "target", "rater", "score", nan_policy="omit").set_index("Type")
    icc2, icc3 = agreement.icc(ratings)
    for ours, kind in ((icc2, "ICC(A,1)"), (icc3, "ICC(C,1)")):
        assert ours.value == pytest.approx(table.loc[kind, "ICC"], abs=1e-9)
        low, high = table.loc[kind, "CI95"]
        assert round(ours.ci_low, 2) == pytest.approx(low, abs=1e-9)  # pingouin rounds its interval to 0.01
        assert round(ours.ci_high, 2) == pytest.approx(high, abs=1e-9)


def test_bland_altman_limits():
    a = np.array([10, 12, 9, np.nan, 15, 7], float)
    b = np.array([11, 12, 11, 4, 13, 8], float)
    ba = agreement.bland_altman(a, b)
    diff = np.array([1, 0, 2, -2, 1], float)
    assert ba.n == 5 and ba.bias == pytest.approx(diff.mean()) and ba.sd == pytest.approx(diff.std(ddof=1))
    assert ba.upper == pytest.approx(diff.mean() + 1.96 * diff.std(ddof=1))


def test_lesion_matching_is_optimal_within_unit_and_threshold():
    # Greedy matching would pair A1-B1 (1 mm) and leave A2 unmatched; the optimum pairs A1-B2 and A2-B1.
    a = [("A1", "femur.distal:R", [0, 0, 0]), ("A2", "femur.distal:R", [0, 0, 4.0]), ("A3", "spine.T8", [0, 0, 300])]
    b = [("B1", "femur.distal:R", [0, 0, 1.0]), ("B2", "femur.distal:R", [0, 0, -3.0]),
         ("B3", "femur.distal:L", [0, 0, 0]), ("B4", "spine.T8", [0, 0, 340])]
    result = agreement.match_lesions(a, b, threshold_mm=5.0)
    assert sorted((x, y) for x, y, _ in result.matched) == [("A1", "B2"), ("A2", "B1")]
    assert result.only_a == ["A3"] and result.only_b == ["B3", "B4"]
    assert result.positive_specific_agreement == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))


def test_lesion_matching_never_crashes_on_huge_finite_positions_and_prefers_more_matches():
    a = [("A1", "femur.distal:R", [1e308, 0, 0]), ("A2", "femur.distal:R", [0, 0, 0]),
         ("A3", "femur.distal:R", [-1e308, 1e308, 0])]
    b = [("B1", "femur.distal:R", [0, 0, 1.0]), ("B2", "femur.distal:R", [-1e308, 0, 0])]
    result = agreement.match_lesions(a, b, threshold_mm=20.0)
    assert [(x, y) for x, y, _ in result.matched] == [("A2", "B1")]
    assert result.only_a == ["A1", "A3"] and result.only_b == ["B2"]
    # two matches 19 mm apart each beat one perfect match: the number of matched pairs comes first
    a = [("A1", "spine.T8", [0, 0, 0]), ("A2", "spine.T8", [0, 0, 19.0])]
    b = [("B1", "spine.T8", [0, 0, 19.0]), ("B2", "spine.T8", [0, 0, 38.0])]
    result = agreement.match_lesions(a, b, threshold_mm=20.0)
    assert sorted((x, y) for x, y, _ in result.matched) == [("A1", "B1"), ("A2", "B2")]


# -- a cohort with known counts ---------------------------------------------------------------------
def _read(code: str, reader: str, lesions: list[tuple], role: str = "adjudicator", marks=None) -> Read:
    items = []
    for n, (site, side, grade) in enumerate(lesions, start=1):
        x = -70.0 if side == "R" else 70.0
        items.append(Lesion(f"L{n}", (x, 0.0, -400.0 + 50 * n), "1.2.3", (0, 0, 0), site_id=site, side=side,
                            grades={"marrow_hyperintensity": grade, "signal_extension": 1}))
    return Read(f"{code}-{reader}", code, reader, "rai-cromris", "1.0.0", "cno-sites-1.0.0", status="submitted",
                lesions=items, unit_marks=marks or {}, role=role)


@pytest.fixture
def known_cohort() -> list[Case]:
    """Three patients; P1 has two timepoints. Counts below are worked out by hand."""
    c1 = Case("CNO-0001", "P1", 1, adjudicated=_read("CNO-0001", "adj", [
        ("femur.distal", "R", 2), ("femur.distal", "L", 1), ("spine.T8", None, 2)]),
        clinical_sites=[("femur.distal", "R"), ("clavicle.medial", "R")])
    c2 = Case("CNO-0002", "P1", 2, adjudicated=_read("CNO-0002", "adj", [
        ("femur.distal", "R", 1), ("spine.T8", None, 2), ("tibia.proximal", "L", 1)]),
        clinical_sites=[("femur.distal", "R")])
    c3 = Case("CNO-0003", "P2", 1, adjudicated=_read("CNO-0003", "adj", [("clavicle.medial", "R", 2)]),
              clinical_sites=[("clavicle.medial", "R"), ("sacroiliac_joint", "L")])
    c4 = Case("CNO-0004", "P3", 1, adjudicated=None, clinical_sites=[("tibia.distal", "R")])
    return [c1, c2, c3, c4]


def test_concordance_counts_are_exact(known_cohort):
    # Per timepoint. CNO-0001: painful femur.distal R (a lesion there: confirmed), clavicle.medial R (none:
    # clinical only); lesions femur.distal R (in a painful site), femur.distal L and T8 (subclinical).
    # CNO-0002: painful femur.distal R (confirmed); lesions femur.distal R (in), T8 and tibia.proximal L (subclinical).
    # CNO-0003: painful clavicle.medial R (confirmed), SI joint L (ilium L or sacrum: no lesion, clinical only);
    # its clavicle lesion is in a painful site. CNO-0004 has no adjudicated read.
    result = cohort.concordance(known_cohort, cohort.ADJUDICATED, load_taxonomy())
    per_case = {c["case"]: c for c in result["per_timepoint"]["entries"]}
    assert [(s["site"], s["side"], s["confirmed"]) for s in per_case["CNO-0001"]["sites"]] == [
        ("femur.distal", "R", True), ("clavicle.medial", "R", False)]
    assert [(l["unit"], l["subclinical"]) for l in per_case["CNO-0001"]["lesions"]] == [
        ("femur.distal:R", False), ("femur.distal:L", True), ("spine.T8", True)]
    assert per_case["CNO-0002"]["counts"] == {"sites": 1, "sites_confirmed": 1, "sites_clinical_only": 0,
                                              "lesions": 3, "lesions_in_painful_sites": 1, "lesions_subclinical": 2}
    assert per_case["CNO-0003"]["sites"][1]["units"] == ["ilium:L", "sacrum"]
    assert result["skipped"] == [{"case": "CNO-0004", "why": "no reference read"}]
    assert result["per_timepoint"]["totals"] == {"sites": 5, "sites_confirmed": 3, "sites_clinical_only": 2,
                                                 "lesions": 7, "lesions_in_painful_sites": 3, "lesions_subclinical": 4}
    # Cumulative: P1 has painful femur.distal R and clavicle.medial R once each (2 sites, 1 confirmed); its
    # lesions per unit are at most one per timepoint: femur.distal R, femur.distal L, T8, tibia.proximal L (4,
    # 1 in a painful site). P2 as CNO-0003.
    assert result["cumulative"]["totals"] == {"sites": 4, "sites_confirmed": 2, "sites_clinical_only": 2,
                                              "lesions": 5, "lesions_in_painful_sites": 2, "lesions_subclinical": 3}
    groups = {g["group"]: g for g in result["per_timepoint"]["groups"]}
    assert (groups["knee"]["sites"], groups["knee"]["sites_confirmed"], groups["knee"]["lesions"],
            groups["knee"]["lesions_subclinical"]) == (2, 2, 4, 2)
    assert (groups["knee.distal_femur"]["lesions_in_painful_sites"], groups["knee.distal_femur"]["lesions_subclinical"]) == (2, 1)
    assert (groups["clavicle"]["sites_confirmed"], groups["clavicle"]["sites_clinical_only"]) == (1, 1)
    assert (groups["spine"]["lesions_subclinical"], groups["spine.thoracic"]["lesions_subclinical"]) == (2, 2)
    assert (groups["pelvis"]["sites_clinical_only"], groups["pelvis.sij"]["sites_clinical_only"]) == (1, 1)


def test_site_distribution_in_table_2_layout_is_exact(known_cohort):
    result = cohort.distribution(known_cohort, cohort.ADJUDICATED, load_taxonomy())
    rows = {r["group"]: r for r in result["rows"]}
    # radiological: 7 lesions = knee 4 (distal femur 3, proximal tibia 1), spine 2, clavicle 1
    assert result["total_radiological"] == 7 and result["total_clinical"] == 6
    assert (rows["knee"]["radiological_n"], rows["knee.distal_femur"]["radiological_n"],
            rows["knee.proximal_tibia"]["radiological_n"]) == (4, 3, 1)
    assert rows["knee"]["radiological_pct"] == pytest.approx(400 / 7)
    assert (rows["spine"]["radiological_n"], rows["clavicle"]["radiological_n"]) == (2, 1)
    # clinical: 6 painful sites = knee 2, clavicle 2, pelvis 1 (SI joint), tibia 1
    assert (rows["knee"]["clinical_n"], rows["clavicle"]["clinical_n"], rows["pelvis"]["clinical_n"],
            rows["pelvis.sij"]["clinical_n"], rows["tibia"]["clinical_n"]) == (2, 2, 1, 1, 1)
    assert rows["clavicle"]["clinical_pct"] == pytest.approx(200 / 6)
    assert [r["label"] for r in result["rows"] if r["parent"] is None][:3] == ["Clavicle", "Shoulder", "Humerus"]
    # per patient, first timepoint: P1 3 lesions (distal femur on both sides: symmetric), P2 1 lesion
    assert result["patients"] == [{"patient": "P1", "case": "CNO-0001", "lesions": 3, "symmetric": True},
                                  {"patient": "P2", "case": "CNO-0003", "lesions": 1, "symmetric": False}]
    assert result["lesions_per_patient"] == {"mean": 2.0, "min": 1, "max": 3}
    assert (result["unifocal"], result["multifocal"], result["symmetric"], result["asymmetric"]) == (1, 1, 1, 1)


def test_followup_categories_are_exact(known_cohort):
    result = cohort.followup(known_cohort, cohort.ADJUDICATED, load_scheme(), load_taxonomy())
    (patient,) = result["patients"]
    assert patient["patient"] == "P1" and patient["cases"] == ["CNO-0001", "CNO-0002"]
    # units: femur.distal:R 3 -> 2 improved; femur.distal:L 2 -> 0 resolved; spine.T8 3 -> 3 stable;
    # tibia.proximal:L 0 -> 2 new
    changes = {u["unit"]: u["change"] for u in patient["steps"][0]["units"]}
    assert changes == {"femur.distal:R": "improved", "femur.distal:L": "resolved", "spine.T8": "stable",
                       "tibia.proximal:L": "new"}
    assert patient["totals"] == [8, 7] and patient["total_change"] == -1
    assert result["counts"] == {"new": 1, "resolved": 1, "improved": 1, "stable": 1, "worse": 0}
    assert cohort.unit_change(1, 3) == "worse" and cohort.unit_change(0, 0) is None


def test_agreement_report_builds_tables_the_libraries_agree_with():
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    scheme, taxonomy = load_scheme(), load_taxonomy()
    cases = []
    specs = {"a": [("femur.distal", "R", 2), ("spine.T8", None, 1)], "b": [("femur.distal", "R", 1)],
             "c": [("femur.distal", "R", 2), ("tibia.proximal", "L", 2)]}
    for n in range(4):
        case = Case(f"CNO-{n:04d}", f"P{n}", 1)
        for reader, lesions in specs.items():
            if not (reader == "c" and n == 3):  # a missing read
                case.reads[reader] = _read(case.code, reader, lesions[: 1 + n % 2], role="reader")
        cases.append(case)
    result = cohort.agreement_report(cases, ["a", "b", "c"], scheme, taxonomy, threshold_mm=20)
    units = cohort.all_units(taxonomy)
    assert result["unit_presence"]["targets"] == 4 * len(units)
    assert result["unit_presence"]["complete_targets"] == 3 * len(units)
    table = []
    for case in cases[:3]:
        scores = {r: cohort.scores_of(case.reads[r], scheme, taxonomy) for r in "abc"}
        for unit in units:
            table.append([int(unit in scores[r].units) for r in "abc"])
    expected = fleiss_kappa(aggregate_raters(np.array(table))[0], method="fleiss")
    assert result["unit_presence"]["fleiss_kappa"] == pytest.approx(expected, abs=1e-9)
    assert result["reads"] == {"a": 4, "b": 4, "c": 3}
    (ab, ac, bc) = result["lesions"]
    assert ab["readers"] == ["a", "b"] and ab["matched"] == 4 and ab["only_first"] == 2  # a's T8 lesions
    icc2, icc3 = result["totals"]["icc"]
    assert icc2["n_targets"] == 3


def test_report_files_and_self_contained_html(known_cohort, tmp_path):
    result = report.build(known_cohort, ["concordance", "distribution", "followup", "skeleton"],
                          ("rai-cromris", "1.0.0"), cohort.ADJUDICATED, 20.0, tmp_path)
    report.write_json(result, tmp_path)
    page = report.write_html(result, "Known cohort", tmp_path).read_text()
    for name in ("concordance", "distribution", "followup", "skeleton_cohort"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"{name}.svg").read_text().startswith("<?xml")
    assert page.count("data:image/png;base64,") >= 5
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert (tmp_path / "distribution.csv").read_text().splitlines()[0].startswith("group,label,parent,clinical_n")
    assert "report.json" in {p.name for p in tmp_path.iterdir()}


def test_html_report_renders_in_headless_chromium(known_cohort, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (sh dev test installs it)")
    from matplotlib.image import imread

    result = report.build(known_cohort, ["concordance", "distribution", "followup", "skeleton"],
                          ("rai-cromris", "1.0.0"), cohort.ADJUDICATED, 20.0, tmp_path)
    page = report.write_html(result, "Known cohort", tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2600", f"--screenshot={shot}",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = (imread(shot)[..., :3] * 255).astype(int)

    def present(hex_colour: str, tolerance: int = 12) -> int:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).max(axis=-1) <= tolerance).sum())

    # the figures were drawn: the bar colours of the concordance and distribution figures are on screen
    assert present("#3a9d3a") > 200 and present("#2f6fd0") > 200 and present("#f0c020") > 200
    assert present("#d0502f") > 200


def test_report_command(tmp_path, cli, studies_for_report):
    store_dir, key = studies_for_report
    out = tmp_path / "out"
    code, text, err = cli("report", "all", "demo", "--store", store_dir, "--link-key", key, "--out", out)
    assert code == 0, err
    assert (out / "report.html").exists() and (out / "agreement.csv").exists()
    code, _, err = cli("report", "concordance", "demo", "--store", store_dir, "--out", tmp_path / "x")
    assert code == 1 and "needs clinical records" in err


@pytest.fixture(scope="module")
def studies_for_report(tmp_path_factory):
    """A stored reading study with two readers, an adjudicator and clinical records."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.clinical import CoordinatorDB, import_clinical, link_patient_ids
    from cno_annotate.importer import import_paths
    from cno_annotate.sample import StudyPlan, generate_study
    from cno_annotate.store import Store

    root = tmp_path_factory.mktemp("report")
    for seed in range(3):
        generate_study(root / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=seed))
    store = Store.open(root / "store")
    import_paths(store, [root])
    rs.create(store, "demo", seed=1)
    rs.add_cases(store, "demo", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "demo", ["dr-a", "dr-b"])
    rs.add_readers(store, "demo", ["dr-adj"], role="adjudicator")
    rs.assign(store, "demo")
    for n, case in enumerate(rs.cases(store, "demo")):
        for reader, role in (("dr-a", "reader"), ("dr-b", "reader"), ("dr-adj", "adjudicator")):
            session = ReadSession.open_or_create(store, case.study_uid, reader, reading_study="demo", role=role)
            lesion = session.add_lesion((-70, 0, -400), "1.2", (1, 1, 1), site_id="femur.distal", side="R")
            session.set_grade(lesion, "marrow_hyperintensity", (n + len(reader)) % 3)
            session.submit()
    key = root / "key.sqlite"
    db = CoordinatorDB.open(key)
    link_patient_ids(store, db, "demo")
    csv_path = root / "clinical.csv"
    lines = ["record_id,visit_date,sex,age_at_onset,age_at_diagnosis,painful_sites,treatments,crp_mg_l,esr_mm_h"]
    lines += [f"{s.patient_id},2026-11-01,F,9,10,femur.distal:R; spine.T8,,5,20" for s in store.studies()]
    csv_path.write_text("\n".join(lines) + "\n")
    import_clinical(db, csv_path)
    return Path(store.root), key


def test_a_total_that_leaves_out_a_not_assessable_unit_is_flagged_and_kept_out_of_icc_and_bland_altman(tmp_path):
    scheme, taxonomy = load_scheme(), load_taxonomy()
    cases = []
    for n in range(4):
        case = Case(f"CNO-{n:04d}", f"P{n}", 1)
        case.reads["a"] = _read(case.code, "a", [("femur.distal", "R", n % 3)], role="reader")
        case.reads["b"] = _read(case.code, "b", [("femur.distal", "R", (n + 1) % 3)], role="reader")
        cases.append(case)
    # reader a's only lesion of CNO-0000 is graded "not assessable" throughout: total 0, one unit not assessable
    from dataclasses import replace

    lesion = replace(cases[0].reads["a"].lesions[0], grades={item.id: "NA" for item in scheme.items})
    cases[0].reads["a"] = replace(cases[0].reads["a"], lesions=[lesion])
    scores = cohort.scores_of(cases[0].reads["a"], scheme, taxonomy)
    assert (scores.total, scores.units_not_assessable) == (0, 1)
    result = report.build(cases, ["design", "agreement"], (scheme.id, scheme.version), "adjudicated", 20.0, tmp_path,
                          resamples=20)
    totals = result["sections"]["agreement"]["totals"]
    assert totals["flagged_cases"] == ["CNO-0000"] and totals["icc_cases"] == 3
    assert totals["bland_altman"]["n"] == 3 and totals["bland_altman"]["excluded_flagged"] == 1
    assert totals["bland_altman_cases"] == ["CNO-0001", "CNO-0002", "CNO-0003"]
    assert result["flagged_cases"] == [{"case": "CNO-0000", "reader": "a", "units_not_assessable": 1,
                                        "items_not_assessable": 0}]
    design = {d["topic"]: d["text"] for d in result["sections"]["design"]["grras"]}
    assert "Flagged totals (leave out a not-assessable item or unit): 1 (CNO-0000 a)" in design["Actual numbers"]
    page = report.write_html(result, "t", tmp_path).read_text()
    assert "Bland-Altman: 3 cases; 1 flagged case left out (CNO-0000)" in page


@pytest.mark.parametrize(("option", "message"), [
    (["--threshold-mm", "nan"], "--threshold-mm must be a finite number of mm above 0, not nan"),
    (["--threshold-mm", "0"], "--threshold-mm must be a finite number of mm above 0, not 0"),
    (["--threshold-mm", "-5"], "--threshold-mm must be a finite number of mm above 0, not -5"),
    (["--bootstrap", "-1"], "--bootstrap must be 0 (no intervals) or more resamples, not -1"),
    (["--visit-window-days", "-1"], "--visit-window-days must be 0 or more days, not -1"),
    (["--reader", "dr-nobody"], "'dr-nobody' is not a reader of reading study 'demo'"),
])
def test_report_options_are_checked_with_a_one_line_message(tmp_path, cli, studies_for_report, option, message):
    store_dir, key = studies_for_report
    code, _, err = cli("report", "agreement", "demo", "--store", store_dir, "--out", tmp_path / "out", *option)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_report_refuses_a_link_key_that_does_not_exist_and_never_creates_it(tmp_path, cli, studies_for_report):
    store_dir, _ = studies_for_report
    typo = tmp_path / "typo.sqlite"
    code, _, err = cli("report", "concordance", "demo", "--store", store_dir, "--out", tmp_path / "out",
                       "--link-key", typo)
    assert code != 0 and f"--link-key {typo}: no such file" in err and len(err.strip().splitlines()) == 1, err
    assert not typo.exists()


def test_report_with_no_bootstrap_says_there_are_no_intervals(tmp_path, cli, studies_for_report):
    store_dir, key = studies_for_report
    code, _, err = cli("report", "agreement", "demo", "--store", store_dir, "--out", tmp_path / "out",
                       "--bootstrap", "0")
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "No confidence intervals (--bootstrap 0)" in page


def test_unit_grade_kappas_have_seeded_bootstrap_intervals_and_say_why_when_undefined(tmp_path):
    scheme, taxonomy = load_scheme(), load_taxonomy()
    cases = []
    for n in range(6):
        case = Case(f"CNO-{n:04d}", f"P{n}", 1)
        case.reads["a"] = _read(case.code, "a", [("femur.distal", "R", n % 3)], role="reader")
        case.reads["b"] = _read(case.code, "b", [("femur.distal", "R", (n // 2) % 3)], role="reader")
        cases.append(case)
    first = cohort.agreement_report(cases, ["a", "b"], scheme, taxonomy, resamples=200, seed=7)
    again = cohort.agreement_report(cases, ["a", "b"], scheme, taxonomy, resamples=200, seed=7)
    items = {i["item"]: i for i in first["items"]}
    (pair,) = items["marrow_hyperintensity"]["pairs"]
    low, high = pair["kappa_linear_ci"]
    assert np.isfinite(low) and low <= pair["kappa_linear"] <= high and np.isfinite(pair["kappa_quadratic_ci"][0])
    assert pair["kappa_linear_ci"] == {i["item"]: i for i in again["items"]}["marrow_hyperintensity"]["pairs"][0][
        "kappa_linear_ci"]
    # both readers grade signal extension 1 in every unit: kappa is undefined, and the report says why
    (flat,) = items["signal_extension"]["pairs"]
    assert np.isnan(flat["kappa_linear"]) and flat["kappa_note"] == "not computable: every rating is 1"
    result = report.build(cases, ["agreement"], (scheme.id, scheme.version), "adjudicated", 20.0, tmp_path,
                          resamples=50)
    page = report.write_html(result, "t", tmp_path).read_text()
    assert "not computable: every rating is 1" in page


def test_headings_state_their_unit_and_counts_of_one_are_singular(known_cohort, tmp_path):
    one = [c for c in known_cohort if c.code == "CNO-0001"]
    one[0].reads["adj"] = one[0].adjudicated
    design = {d["topic"]: d["text"] for d in cohort.design(one, load_scheme(), load_taxonomy())}
    assert design["Subjects"].startswith("1 case (whole-body MRI study) of 1 patient;")
    assert design["Raters"].startswith("1 reader (adj); 1 case adjudicated")
    assert "1 case x 1 reader = 1 planned read;" in design["Sample size"]
    result = report.build(known_cohort, ["concordance", "followup"], ("rai-cromris", "1.0.0"), "adjudicated", 20.0,
                          tmp_path)
    page = report.write_html(result, "t", tmp_path).read_text()
    assert "<h2>Follow-up (unit: patients; changes counted in bone units; totals in points)</h2>" in page
    assert "<h3>Cumulative over each patient's timepoints (unit: patients)</h3>" in page
    assert "<h3>Per timepoint (unit: cases, each on its own)</h3>" in page


def test_report_shows_an_icc_bound_outside_the_range_as_not_estimable_and_says_why(tmp_path):
    scheme = load_scheme()
    cases = []
    for n, (grade_a, grade_b) in enumerate([(2, 0), (1, 2), (0, 2), (2, 1)]):  # totals 3-1, 2-3, 1-3, 3-2
        case = Case(f"CNO-{n:04d}", f"P{n}", 1)
        case.reads["a"] = _read(case.code, "a", [("femur.distal", "R", grade_a)], role="reader")
        case.reads["b"] = _read(case.code, "b", [("femur.distal", "R", grade_b)], role="reader")
        cases.append(case)
    result = report.build(cases, ["agreement"], (scheme.id, scheme.version), "adjudicated", 20.0, tmp_path,
                          resamples=20)
    icc2, icc3 = result["sections"]["agreement"]["totals"]["icc"]
    # McGraw & Wong's formula gives an estimate of -1.5 and a lower bound of -1.96 here (pingouin: -1.96)
    assert icc2["value"] != icc2["value"] and icc2["ci_low"] != icc2["ci_low"]
    assert icc2["note"] == ("not estimable: the ICC(2,1) estimate (-1.5) and the 95 % CI lower bound (-1.96) fall "
                            "outside the range of an ICC of 2 readers (-1 to 1) with 4 cases")
    page = report.write_html(result, "t", tmp_path).read_text()
    assert f"ICC(2,1) complete cases: {icc2['note']}" in page
    assert f"<td>ICC(2,1) complete cases</td><td>4</td><td>–</td><td>– to {icc2['ci_high']:.2f}</td>" in page
    assert "-1.96 to" not in page and icc3["note"] == ""
    report.write_json(result, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())["sections"]["agreement"]["totals"]["icc"][0]
    assert saved["ci_low"] is None and saved["note"] == icc2["note"]
    rows = [r for r in report.agreement_rows(result["sections"]["agreement"]) if r["statistic"] == "ICC(2,1)"]
    assert all(-1 <= r["ci_low"] <= 1 or r["ci_low"] != r["ci_low"] for r in rows)


def test_the_followup_section_states_its_counts_thresholds_and_each_patients_totals(known_cohort, tmp_path):
    # P1: CNO-0001 -> CNO-0002 (no shared tracking UIDs: matched by bone unit); units femur.distal:R 3 -> 2
    # improved, femur.distal:L resolved, spine.T8 stable, tibia.proximal:L new; totals 8 -> 7.
    result = report.build(known_cohort, ["followup"], ("rai-cromris", "1.0.0"), "adjudicated", 20.0, tmp_path)
    page = report.write_html(result, "t", tmp_path).read_text()
    assert ("<h2>Follow-up (unit: patients; changes counted in bone units; totals in points)</h2>"
            "<p>Bone units between consecutive timepoints: new 1, resolved 1, improved 1, stable 1, worse 0.</p>"
            "<p>Lesions matched by tracking UID (carried forward by the reader): new 0, resolved 0, improved 0, "
            "stable 0, worse 0; steps matched by bone unit only (reads without shared tracking UIDs): 1. Size, volume "
            "and STIR lesion:muscle ratio count as improved or worse from a relative change of size 20%, volume 30%, "
            "stir 20%.</p><table>") in page
    assert "<tr><td>P1</td><td>CNO-0001 → CNO-0002</td><td>8 → 7</td><td>-1</td></tr></tbody></table><img" in page


def test_report_shows_each_bootstrap_interval_as_low_to_high_in_two_decimals(tmp_path):
    scheme = load_scheme()
    cases = []
    for n in range(6):
        case = Case(f"CNO-{n:04d}", f"P{n}", 1)
        case.reads["a"] = _read(case.code, "a", [("femur.distal", "R", n % 3)], role="reader")
        case.reads["b"] = _read(case.code, "b", [("femur.distal", "R", (n // 2) % 3)], role="reader")
        cases.append(case)
    result = report.build(cases, ["agreement"], (scheme.id, scheme.version), "adjudicated", 20.0, tmp_path,
                          resamples=50)
    [pair] = result["sections"]["agreement"]["lesions"]
    grades = next(f for f in pair["features"] if f["item"] == "marrow_hyperintensity")
    (low, high), (low_q, high_q) = grades["kappa_linear_ci"], grades["kappa_quadratic_ci"]
    assert np.isfinite([low, high, low_q, high_q]).all() and low < high
    page = report.write_html(result, "t", tmp_path).read_text()
    assert (f"<td>a vs b</td><td>6</td><td>{grades['kappa_linear']:.3f}</td><td>{low:.2f} to {high:.2f}</td>"
            f"<td>{grades['kappa_quadratic']:.3f}</td><td>{low_q:.2f} to {high_q:.2f}</td></tr>") in page


def test_bland_altman_limits_lie_1_96_sd_either_side_and_need_two_pairs():
    ba = agreement.bland_altman(np.array([10, 12, 9], float), np.array([11, 12, 13], float))
    diff = np.array([1, 0, 4], float)
    assert ba.lower == pytest.approx(diff.mean() - 1.96 * diff.std(ddof=1))
    assert ba.upper == pytest.approx(diff.mean() + 1.96 * diff.std(ddof=1))
    two = agreement.bland_altman(np.array([1, 2], float), np.array([2, 4], float))
    assert (two.n, two.bias, two.sd) == (2, 1.5, pytest.approx(np.std([1, 2], ddof=1)))
    one = agreement.bland_altman(np.array([1, np.nan], float), np.array([2, 4], float))
    assert one.n == 1 and all(math.isnan(v) for v in (one.bias, one.sd, one.lower, one.upper))


def test_lesions_exactly_the_threshold_apart_match_and_a_small_threshold_still_prefers_more_matches():
    at_limit = agreement.match_lesions([("A1", "spine.T8", [0, 0, 0])], [("B1", "spine.T8", [0, 0, 5.0])], 5.0)
    assert at_limit.matched == [("A1", "B1", 5.0)]
    # threshold 1 mm: A1-B1, A2-B1 and A1-B2 are 0.5 mm apart, A2-B2 1.5 mm; two pairs (A1-B2, A2-B1) beat one
    a = [("A1", "spine.T8", [0, 0, 0.5]), ("A2", "spine.T8", [0, 0, -0.5])]
    b = [("B1", "spine.T8", [0, 0, 0.0]), ("B2", "spine.T8", [0, 0, 1.0])]
    result = agreement.match_lesions(a, b, threshold_mm=1.0)
    assert sorted((x, y) for x, y, _ in result.matched) == [("A1", "B2"), ("A2", "B1")]

"""Clinical-imaging concordance counted as the cohort paper counts: painful sites and imaging lesions.

Every expected number below is worked out by hand from the cohort in the fixture, with the taxonomy's
clinical regions (cno-sites 2.0.0) read from the data file, not from the code under test.
"""

from __future__ import annotations

import pytest

from cno_annotate.analysis import cohort
from cno_annotate.analysis.cohort import Case
from cno_annotate.annotation.model import Lesion, Read
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.clinical import parse_clinical_csv
from cno_annotate.errors import CnoError
from cno_annotate.store.clinical import PainfulSite, Visit


def _read(code: str, lesions: list[tuple]) -> Read:
    """An adjudicated read in cno-sites 2.0.0; lesions are (site, side) or (site, side, sub-site)."""
    items = []
    for n, spec in enumerate(lesions, start=1):
        site, side, subsite = (*spec, None)[:3]
        items.append(Lesion(f"L{n}", (0.0, 0.0, 10.0 * n), "1.2.3", (0, 0, 0), site_id=site, side=side,
                            subsite=subsite))
    return Read(f"{code}-adj", code, "adj", "rai-cromris", "1.0.0", "cno-sites-2.0.0", status="submitted",
                lesions=items, role="adjudicator")


@pytest.fixture
def cohort_cases() -> list[Case]:
    """P1 at two timepoints, P2 with a joint region covering two bones, P3 without read, P4 without record."""
    a = Case("CNO-0001", "P1", 1, adjudicated=_read("CNO-0001", [
        ("femur.distal", "R"), ("femur.distal", "R"), ("tibia.proximal", "R"), ("spine.T8", None)]),
        clinical_sites=[("knee", "R"), ("femur.distal", "R"), ("ankle", "L")])
    b = Case("CNO-0002", "P1", 2, adjudicated=_read("CNO-0002", [
        ("femur.distal", "R"), ("ilium", "L", "periarticular_sij"), ("sacrum", None), ("talus", "L")]),
        clinical_sites=[("knee", "R"), ("sacroiliac_joint", "L")])
    c = Case("CNO-0003", "P2", 1, adjudicated=_read("CNO-0003", [
        ("clavicle.medial", "R"), ("sternum.body", None)]),
        clinical_sites=[("sternoclavicular_joint", "R"), ("wrist", "L")])
    d = Case("CNO-0004", "P3", 1, adjudicated=None, clinical_sites=[("hip", "R")])
    e = Case("CNO-0005", "P4", 1, adjudicated=_read("CNO-0005", [("femur.proximal", "L")]), clinical_sites=None)
    return [b, a, c, d, e]


def test_per_timepoint_counts_sites_and_lesions_without_merging_them_into_units(cohort_cases):
    result = cohort.concordance(cohort_cases, cohort.ADJUDICATED, load_taxonomy())
    per_case = {e["case"]: e for e in result["per_timepoint"]["entries"]}
    # CNO-0001: knee R covers distal femur, proximal tibia, patella and proximal fibula (R): L1, L2, L3 lie
    # there -> confirmed. femur.distal R is a second painful site in the same bone unit: confirmed by L1, L2
    # (counted as its own site, not merged with the knee). Ankle L: no lesion on the left -> clinical only.
    # T8 lies in no painful site -> subclinical. Sites 3 (2 confirmed, 1 clinical only); lesions 4 (3 in, 1 sub).
    first = per_case["CNO-0001"]
    assert [(s["site"], s["confirmed"], s["lesions"]) for s in first["sites"]] == [
        ("knee", True, ["L1", "L2", "L3"]), ("femur.distal", True, ["L1", "L2"]), ("ankle", False, [])]
    assert first["counts"] == {"sites": 3, "sites_confirmed": 2, "sites_clinical_only": 1,
                               "lesions": 4, "lesions_in_painful_sites": 3, "lesions_subclinical": 1}
    # CNO-0002: knee R confirmed by L1; SI joint L covers ilium L and the (midline) sacrum: L2 and L3 ->
    # confirmed. Talus L: the ankle was painful at timepoint 1 only -> subclinical here. Sites 2 (2 confirmed);
    # lesions 4 (3 in, 1 subclinical).
    second = per_case["CNO-0002"]
    assert [(s["site"], s["lesions"]) for s in second["sites"]] == [("knee", ["L1"]), ("sacroiliac_joint", ["L2", "L3"])]
    assert [l["subclinical"] for l in second["lesions"]] == [False, False, False, True]
    # CNO-0003: the SC joint R covers the medial clavicle R and the sternum: both lesions -> confirmed;
    # wrist L -> clinical only. Sites 2 (1, 1); lesions 2 (2 in).
    assert per_case["CNO-0003"]["counts"] == {"sites": 2, "sites_confirmed": 1, "sites_clinical_only": 1,
                                              "lesions": 2, "lesions_in_painful_sites": 2, "lesions_subclinical": 0}
    # Totals: sites 3 + 2 + 2 = 7 (confirmed 2 + 2 + 1 = 5, clinical only 2); lesions 4 + 4 + 2 = 10
    # (in painful sites 3 + 3 + 2 = 8, subclinical 2). CNO-0004 and CNO-0005 are skipped.
    assert result["per_timepoint"]["totals"] == {"sites": 7, "sites_confirmed": 5, "sites_clinical_only": 2,
                                                 "lesions": 10, "lesions_in_painful_sites": 8,
                                                 "lesions_subclinical": 2}
    assert result["skipped"] == [{"case": "CNO-0004", "why": "no reference read"},
                                 {"case": "CNO-0005", "why": "missing clinical data"}]


def test_cumulative_counts_each_painful_site_once_per_patient_over_its_timepoints(cohort_cases):
    result = cohort.concordance(cohort_cases, cohort.ADJUDICATED, load_taxonomy())
    patients = {e["patient"]: e for e in result["cumulative"]["entries"]}
    # P1: distinct painful sites knee R, femur.distal R, ankle L, SI joint L = 4. The ankle L is confirmed by
    # the talus lesion of timepoint 2 -> 4 confirmed. Lesions per unit, the most at one timepoint:
    # femur.distal R max(2, 1) = 2, tibia.proximal R 1, T8 1, ilium L 1, sacrum 1, talus L 1 = 7; only T8
    # lies in no unit any painful site covers -> 6 in painful sites, 1 subclinical.
    assert patients["P1"]["cases"] == ["CNO-0001", "CNO-0002"]
    assert patients["P1"]["counts"] == {"sites": 4, "sites_confirmed": 4, "sites_clinical_only": 0,
                                        "lesions": 7, "lesions_in_painful_sites": 6, "lesions_subclinical": 1}
    # P2 as its single timepoint. Totals: sites 4 + 2 = 6 (5 confirmed, 1 clinical only); lesions 7 + 2 = 9.
    assert result["cumulative"]["totals"] == {"sites": 6, "sites_confirmed": 5, "sites_clinical_only": 1,
                                              "lesions": 9, "lesions_in_painful_sites": 8, "lesions_subclinical": 1}
    groups = {g["group"]: g for g in result["cumulative"]["groups"]}
    # Knee: the knee region and the distal femur site (2 sites, both confirmed); lesions distal femur 2 and
    # proximal tibia 1. SI joint row: the painful SI joint and the ilium lesion at the joint (sub-site).
    assert (groups["knee"]["sites"], groups["knee"]["sites_confirmed"], groups["knee"]["lesions"]) == (2, 2, 3)
    assert (groups["pelvis.sij"]["sites"], groups["pelvis.sij"]["lesions"]) == (1, 1)
    assert (groups["spine"]["lesions"], groups["spine"]["lesions_subclinical"]) == (2, 1)  # T8 and the sacrum
    assert (groups["clavicle"]["sites_confirmed"], groups["wrist"]["sites_clinical_only"]) == (1, 1)


def test_clinical_regions_cover_the_bones_written_in_the_taxonomy():
    taxonomy = load_taxonomy()
    assert taxonomy.covered_units("knee", "L") == {"femur.distal:L", "tibia.proximal:L", "patella:L",
                                                   "fibula.proximal:L"}
    assert taxonomy.covered_units("ankle", "R") == {"tibia.distal:R", "fibula.distal:R", "talus:R", "calcaneus:R"}
    assert taxonomy.covered_units("sacroiliac_joint", "R") == {"ilium:R", "sacrum"}
    assert taxonomy.covered_units("pelvis", None) >= {"ilium:R", "ilium:L", "sacrum"}
    for region in taxonomy.clinical_regions.values():
        assert len(region.reasoning) > 30, region.id
    with pytest.raises(CnoError, match="needs a side"):
        taxonomy.covered_units("knee", None)


def test_clinical_csv_accepts_regions_and_refuses_unknown_names(tmp_path):
    path = tmp_path / "clinical.csv"
    header = "record_id,visit_date,sex,age_at_onset,age_at_diagnosis,painful_sites,treatments,crp_mg_l,esr_mm_h\n"
    path.write_text(header + "R1,2024-01-02,F,9,10,knee R; SI joint:L; Ankle left; lower back; femur.distal:R,,,\n")
    (row,) = parse_clinical_csv(path)
    assert row.painful_sites == [("knee", "R"), ("sacroiliac_joint", "L"), ("ankle", "L"), ("lumbar_spine", None),
                                 ("femur.distal", "R")]
    path.write_text(header + "R1,2024-01-02,F,9,10,knee,,,\nR1,2024-01-03,F,9,10,elbw R,,,\n"
                    "R1,2024-01-04,F,9,10,pelvis L,,,\n")
    with pytest.raises(CnoError) as error:
        parse_clinical_csv(path)
    message = str(error.value)
    assert "Knee needs a side" in message and "unknown site 'elbw'" in message and "Pelvis has no side" in message


@pytest.fixture(scope="module")
def linked_store(tmp_path_factory):
    """Four one-reader cases (adjudicated, a lesion in the distal femur R), linked in four ways to the records."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.clinical import CoordinatorDB, import_clinical
    from cno_annotate.importer import import_paths
    from cno_annotate.sample import StudyPlan, generate_study
    from cno_annotate.store import Store

    root = tmp_path_factory.mktemp("linked")
    for seed in range(4):
        generate_study(root / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=seed))
    store = Store.open(root / "store")
    import_paths(store, [root])
    rs.create(store, "demo", seed=1)
    rs.add_cases(store, "demo", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "demo", ["dr-adj"], role="adjudicator")
    rs.assign(store, "demo")
    codes = sorted(c.reading_code for c in rs.cases(store, "demo"))
    for case in rs.cases(store, "demo"):
        session = ReadSession.open_or_create(store, case.study_uid, "dr-adj", reading_study="demo",
                                             role="adjudicator")
        session.add_lesion((-70, 0, -400), "1.2", (1, 1, 1), site_id="femur.distal", side="R")
        session.submit()
    key = root / "key.sqlite"
    db = CoordinatorDB.open(key)
    # the sample studies are dated 2026-11-04: R0 seen 3 days before, R1 only years before, R2 has no visit,
    # the fourth case is not linked at all
    db.link("demo", {codes[0]: "R0", codes[1]: "R1", codes[2]: "R2"})
    csv_path = root / "clinical.csv"
    csv_path.write_text("record_id,visit_date,sex,age_at_onset,age_at_diagnosis,painful_sites,treatments,crp_mg_l,"
                        "esr_mm_h\nR0,2026-11-01,F,9,10,femur.distal:R,,,\nR0,2025-01-01,F,9,10,spine.T8,,,\n"
                        "R1,2020-01-01,F,9,10,spine.T8,,,\n")
    import_clinical(db, csv_path)
    return store, db, codes


def test_cases_without_clinical_data_are_left_out_of_concordance_and_listed(linked_store):
    store, db, codes = linked_store
    cases = cohort.collect(store, "demo", db, visit_window_days=90)
    result = cohort.concordance(cases, cohort.ADJUDICATED, load_taxonomy(), visit_window_days=90)
    # only the first case has a visit (3 days before its scan, the nearest): its lesion lies in the painful site
    assert [e["case"] for e in result["per_timepoint"]["entries"]] == [codes[0]]
    assert result["per_timepoint"]["totals"]["lesions"] == 1
    assert result["per_timepoint"]["totals"]["lesions_subclinical"] == 0
    missing = result["missing_clinical"]
    assert missing["per_timepoint"]["count"] == 3
    assert {m["case"]: m["why"] for m in missing["per_timepoint"]["cases"]} == {
        codes[1]: "no clinical visit within 90 days of the study (nearest 2499 days)",
        codes[2]: "no clinical visit for the linked record",
        codes[3]: "not linked to a clinical record"}
    assert sorted(missing["cumulative"]["cases"]) == codes[1:]
    assert missing["cumulative"]["count"] == 3 and len(missing["cumulative"]["patients"]) >= 1
    assert "90 days" in result["visit_rule"]
    assert result["visit_gaps"] == [{"case": codes[0], "gap_days": 3}]


def test_report_states_the_missing_clinical_data_and_the_visit_rule(linked_store, tmp_path):
    from cno_annotate.analysis import report

    store, db, codes = linked_store
    cases = cohort.collect(store, "demo", db, visit_window_days=30)
    result = report.build(cases, ["concordance"], ("rai-cromris", "2.0.0"), "adjudicated", 20.0, tmp_path,
                          visit_window_days=30)
    page = report.write_html(result, "demo", tmp_path).read_text()
    assert "Missing clinical data (per timepoint): 3 cases" in page and "(cumulative): 3 cases" in page
    assert all(code in page for code in codes[1:])
    assert "within 30 days" in page and f"{codes[0]} 3 days" in page


def test_a_visit_exactly_the_window_away_is_used_and_one_day_more_is_not(linked_store):
    store, db, codes = linked_store  # codes[0]'s visit is 3 days before its study
    [within] = [c for c in cohort.collect(store, "demo", db, visit_window_days=3) if c.code == codes[0]]
    assert within.visit_gap_days == 3 and within.clinical_sites == [("femur.distal", "R")]
    assert within.clinical_missing is None
    [beyond] = [c for c in cohort.collect(store, "demo", db, visit_window_days=2) if c.code == codes[0]]
    assert beyond.clinical_missing == "no clinical visit within 2 days of the study (nearest 3 days)"


@pytest.mark.parametrize("study_date", ["", "2026110", "202611041", "2026-11-04"])
def test_a_study_without_a_dicom_date_is_matched_to_no_visit_and_says_why(study_date):
    case = Case("CNO-0001", "P1", 1)
    visits = [Visit("R1", "2026-11-04", None, None, None, None, None, (PainfulSite("femur.distal", "R"),))]
    cohort._attach_visit(case, visits, study_date, 90)
    assert case.clinical_missing == "the study has no date to match a clinical visit to"
    assert case.clinical_sites is None

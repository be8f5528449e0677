"""Reports that always come out, the list of reading studies, and reads reopened after submission."""

from __future__ import annotations

import json


def _study_store(root, readers: dict[str, str], name: str = "demo", n_studies: int = 2):
    """A store with ``n_studies`` sample studies in reading study ``name``; every reader submits one lesion."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.importer import import_paths
    from cno_annotate.sample import StudyPlan, generate_study
    from cno_annotate.store import Store

    for seed in range(n_studies):
        generate_study(root / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=seed))
    store = Store.open(root / "store")
    import_paths(store, [root])
    rs.create(store, name, seed=1)
    rs.add_cases(store, name, [s.study_uid for s in store.studies()])
    for reader, role in readers.items():
        rs.add_readers(store, name, [reader], role=role)
    rs.assign(store, name)
    for case in rs.cases(store, name):
        for reader, role in readers.items():
            session = ReadSession.open_or_create(store, case.study_uid, reader, reading_study=name, role=role)
            lesion = session.add_lesion((-70, 0, -400), "1.2", (1, 1, 1), site_id="femur.distal", side="R")
            session.set_grade(lesion, "marrow_hyperintensity", 2)
            session.submit()
    return store


def test_report_all_with_only_adjudicated_reads_writes_what_it_can_and_says_why_the_rest_is_absent(tmp_path, cli):
    store = _study_store(tmp_path, {"dr-adj": "adjudicator"})
    out = tmp_path / "out"
    code, text, err = cli("report", "all", "demo", "--store", store.root, "--out", out)
    assert code == 0, err
    result = json.loads((out / "report.json").read_text())
    assert set(result["sections"]) == {"design", "distribution", "skeleton"}
    assert result["absent"] == {
        "agreement": "agreement needs at least two readers with submitted reads",
        "concordance": "concordance needs clinical records: give --link-key with linked, imported records",
        "followup": "no patient has reference reads at two or more timepoints",
    }
    page = (out / "report.html").read_text()
    assert "Sections not computed" in page and "agreement needs at least two readers" in page
    assert "agreement not computed: agreement needs at least two readers" in text
    # one section asked for by name still fails with its reason
    code, _, err = cli("report", "agreement", "demo", "--store", store.root, "--out", tmp_path / "x")
    assert code == 1 and "at least two readers" in err


def test_reading_study_list_shows_cases_readers_and_progress(tmp_path, cli):
    from cno_annotate import reading_study as rs

    store = _study_store(tmp_path, {"dr-a": "reader", "dr-b": "reader", "dr-adj": "adjudicator"})
    rs.create(store, "empty", seed=2)
    code, text, err = cli("reading-study", "list", "--store", store.root, "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(text)}
    # demo: 2 cases x 2 readers = 4 expected reader reads, all submitted; both cases adjudicated
    assert rows["demo"] == {"name": "demo", "scheme": "rai-cromris 2.0.0", "cases": 2, "readers": 2,
                            "adjudicators": 1, "submitted": 4, "expected": 4, "progress": 100.0, "adjudicated": 2}
    assert rows["empty"]["cases"] == 0 and rows["empty"]["progress"] == 0.0
    code, text, _ = cli("reading-study", "list", "--store", store.root)
    assert code == 0 and "demo" in text and "submitted 4/4 (100 %)" in text


def test_a_reopened_read_is_analysed_with_the_last_submitted_version(tmp_path):
    from cno_annotate import reading_study as rs
    from cno_annotate.analysis import cohort
    from cno_annotate.annotation.reads import ReadSession, list_reads

    store = _study_store(tmp_path, {"dr-a": "reader", "dr-b": "reader", "dr-adj": "adjudicator"}, n_studies=1)
    (case,) = rs.cases(store, "demo")
    for reader in ("dr-a", "dr-adj"):
        (row,) = list_reads(store, study_uid=case.study_uid, reader=reader, reading_study="demo")
        draft = ReadSession.new_version(store, row["read_id"], reader, "recheck the femur")
        draft.add_lesion((70, 0, -400), "1.2", (1, 1, 1), site_id="femur.distal", side="L")
    (analysed,) = cohort.collect(store, "demo")
    assert sorted(analysed.reads) == ["dr-a", "dr-b"]
    assert analysed.reads["dr-a"].version == 1 and len(analysed.reads["dr-a"].lesions) == 1
    assert analysed.adjudicated is not None and analysed.adjudicated.version == 1


def test_the_distribution_says_no_clinical_data_when_none_was_given(tmp_path, cli):
    store = _study_store(tmp_path, {"dr-adj": "adjudicator"}, n_studies=1)
    out = tmp_path / "out"
    code, _, err = cli("report", "distribution", "demo", "--store", store.root, "--out", out)
    assert code == 0, err
    page = (out / "report.html").read_text()
    assert "no clinical data" in page and "1 lesions (radiological)" in page
    assert "0 painful sites" not in page

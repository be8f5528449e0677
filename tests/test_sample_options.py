"""The sample command refuses a negative seed and writes stations that compose at any matrix."""

from __future__ import annotations

import json

from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store


def test_a_negative_seed_is_a_usage_error(cli, tmp_path):
    code, out, err = cli("sample", "--out", tmp_path / "s", "--seed", "-1")
    assert code == 2 and "Traceback" not in err and "--seed" in err, err
    assert not (tmp_path / "s").exists()


def test_two_stations_at_matrix_16_compose(tmp_path):
    generate_study(tmp_path / "s", StudyPlan(stations=2, slices=4, matrix=16, seed=1))
    store = Store.open(tmp_path / "store")
    import_paths(store, [tmp_path / "s"])
    composed = [v for v in store.volumes() if v.kind == "composed"]
    assert len(composed) == 2, [c for s in store.studies() for c in store.compositions(s.study_uid)]


def test_timepoints_write_visits_of_one_patient_with_tracked_lesions(cli, tmp_path):
    code, out, err = cli("sample", "--out", tmp_path / "bad", "--timepoints", "4")
    assert code == 1 and "--timepoints must be 1 to 3" in err
    code, out, _ = cli("sample", "--out", tmp_path / "s", "--timepoints", "3", "--stations", "1", "--slices", "2",
                       "--matrix", "16")
    assert code == 0 and "3 visits x 1 station x" in out
    truth = json.loads((tmp_path / "s" / "ground_truth.json").read_text())
    store = Store.open(tmp_path / "store")
    import_paths(store, [tmp_path / "s"])
    studies = store.studies()
    assert len(studies) == 3 and len({s.patient_id for s in studies}) == 1
    assert len({s.accession for s in studies}) == 3  # each visit is its own order, with its own accession
    assert store.study_uid_for(studies[1].accession) == studies[1].study_uid
    assert sorted(s.study_date for s in studies) == [v["study_date"] for v in truth["visits"]]
    courses = {t["track_id"]: t["course"] for t in truth["tracks"]}
    present = [{lesion["track_id"] for lesion in v["lesions"]} for v in truth["visits"]]
    assert {"resolves", "appears", "shrinks", "grows", "persists"} <= set(courses.values())
    assert {t for t, c in courses.items() if c == "resolves"} <= present[0] - present[1]
    appearing = {t for t, c in courses.items() if c == "appears"}
    assert len(appearing) == 2 and appearing <= present[2] - present[0] and len(appearing & present[1]) == 1
    assert [(t["from_visit"], t["to_visit"]) for t in truth["transforms"]] == [(1, 2), (1, 3), (2, 3)]


def test_each_seed_draws_its_own_lesions_and_normal_variants(tmp_path):
    truths = [generate_study(tmp_path / f"s{seed}", StudyPlan(stations=1, slices=2, matrix=16, seed=seed))
              for seed in range(4)]
    sites = [tuple(sorted((x["bone"], x["segment"], x["side"]) for x in t["lesions"])) for t in truths]
    assert len(set(sites)) == 4, sites
    lesions = [x for t in truths for x in t["lesions"]]
    assert {x["intensity"] for x in lesions} == {"marked", "moderate"}
    assert {x["margin"] for x in lesions} == {"sharp", "ill-defined"}
    assert {x["surroundings"] for x in lesions} == {"none", "periosteal", "soft tissue"}
    assert len({tuple(x["radii_mm"]) for x in lesions}) > len(lesions) // 2
    for truth in truths:
        kinds = [v["kind"] for v in truth["normal_variants"]]
        assert kinds.count("bright physis") == 24 and 1 <= kinds.count("residual red marrow") <= 3
        lesion_ids = {x["id"] for x in truth["lesions"]}
        assert len(lesion_ids) == len(truth["lesions"]) and not any("id" in v for v in truth["normal_variants"])


def test_the_default_slices_cover_the_whole_body_depth():
    plan = StudyPlan()
    assert plan.slices == 16 and plan.slices * plan.slice_mm >= 220
    # the phantom's deepest points (back of the trunk, front of the feet) lie inside the slab
    slab = (plan.centre_y - plan.slices * plan.slice_mm / 2, plan.centre_y + plan.slices * plan.slice_mm / 2)
    assert slab[0] <= -105 and slab[1] >= 110


def test_lesions_outside_the_field_of_view_are_said_and_marked_in_the_truth(cli, tmp_path):
    """Six stations make each square field of view 288 mm wide: seed 613's distal radius lesion (x = 191 mm)
    lies beside the images. The truth marks it and the command says so, so no one scores a miss for it."""
    code, out, _ = cli("sample", "--out", tmp_path / "s", "--stations", "6", "--slices", "4", "--matrix", "48",
                       "--seed", "613")
    assert code == 0
    truth = json.loads((tmp_path / "s" / "ground_truth.json").read_text())
    half = StudyPlan(stations=6, slices=4, matrix=48, seed=613).station_fov / 2
    for visit in truth["visits"]:
        for found in visit["lesions"] + visit["normal_variants"]:
            assert found["in_field_of_view"] == (abs(found["lps_mm"][0]) <= half), found
    outside = [x for x in truth["lesions"] if not x["in_field_of_view"]]
    assert [x["bone"] for x in outside] == ["radius"], outside
    assert f"1 lesion of visit 1 lies outside the images ({outside[0]['id']} " in out, out

"""The follow-up report on hand-built reads: lesions by tracking UID, bone units by score and by measures."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest

from cno_annotate.analysis import cohort
from cno_annotate.analysis.cohort import Case
from cno_annotate.analysis.report import table_rows
from cno_annotate.annotation.model import Followup, Lesion, Read
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.annotation.validation import read_problems

PLACES = {"femur.distal": (-70.0, -400.0), "spine.L2": (0.0, -100.0), "ilium": (60.0, -250.0),
          "tibia.shaft": (70.0, -600.0), "clavicle.medial": (-30.0, 150.0)}


def _lesion(n: int, uid: str, site: str, side: str | None, grade: int, radius: float | None = None,
            ratio: float | None = None) -> Lesion:
    x, z = PLACES[site]
    extent = None if radius is None else {"kind": "ellipse", "plane": "coronal", "radii_mm": [radius, radius],
                                          "slice_range_mm": [-radius, radius]}
    lesion = Lesion(f"L{n}", (x, 0.0, z), "1.2.3", (0, 0, 0), site_id=site, side=side, extent=extent,
                    grades={"marrow_hyperintensity": grade}, tracking_uid=uid)
    if ratio is not None:  # the STIR lesion:muscle ratio, where a reader measured it
        object.__setattr__(lesion, "stir_muscle_ratio", ratio)
    return lesion


def _read(read_id: str, code: str, lesions: list[Lesion], followup: Followup | None = None) -> Read:
    return Read(read_id, code, "dr-a", "rai-cromris", "1.0.0", "cno-sites-1.0.0", status="submitted",
                lesions=lesions, followup=followup)


#: (uid, site, side, (grade, radius, ratio) before or None, (grade, radius, ratio) after or None, outcome)
PLAN = [
    ("2.25.1", "femur.distal", "R", (2, 10.0, 3.0), (1, 5.0, 1.5), "persisting"),  # improved on every measure
    ("2.25.2", "spine.L2", None, (2, 6.0, None), (2, 6.5, None), "persisting"),  # stable grade and size
    ("2.25.3", "ilium", "L", (1, None, None), None, "resolved"),
    ("2.25.4", "tibia.shaft", "L", (1, None, None), None, "not_assessable"),
    ("2.25.5", "clavicle.medial", "L", None, (2, None, None), None),  # new
]


def _tracked_cohort() -> list[Case]:
    before, after = [], []
    for n, (uid, site, side, b, a, _) in enumerate(PLAN, start=1):
        if b is not None:
            before.append(_lesion(n, uid, site, side, b[0], b[1], b[2]))
        if a is not None:
            after.append(_lesion(n, uid, site, side, a[0], a[1], a[2]))
    outcomes = {uid: o for uid, *_, o in PLAN if o is not None}
    r0 = _read("r0", "CNO-0001", before)
    r1 = _read("r1", "CNO-0002", after, Followup("r0", outcomes))
    return [Case("CNO-0001", "P1", 1, reads={"dr-a": r0}), Case("CNO-0002", "P1", 2, reads={"dr-a": r1})]


def _expected_lesion_change(b, a, outcome) -> str | None:
    if b is None:
        return "new"
    if a is None:
        return None if outcome == "not_assessable" else "resolved"
    return "improved" if a[0] < b[0] else "worse" if a[0] > b[0] else "stable"


def test_tracked_lesions_are_matched_by_uid_and_counted_from_their_grades():
    result = cohort.followup(_tracked_cohort(), "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"),
                             "paired-chronological")
    [patient] = result["patients"]
    [step] = patient["steps"]
    assert step["matching"] == "tracking UID" and result["design"] == "paired-chronological"
    expected = {uid: _expected_lesion_change(b, a, o) for uid, _, _, b, a, o in PLAN}
    assert {r["tracking_uid"]: r["change"] for r in step["lesions"]} == expected
    counts = Counter(c for c in expected.values() if c is not None)
    assert step["lesion_counts"] == {k: counts.get(k, 0) for k in cohort.CHANGE} == result["lesion_counts"]
    assert step["not_assessable"] == sum(o == "not_assessable" for *_, o in PLAN)
    femur = next(r for r in step["lesions"] if r["tracking_uid"] == "2.25.1")
    assert femur["by"] == {"grade": "improved", "size_mm": "improved", "volume_ml": "improved",
                           "stir_muscle_ratio": "improved"}
    spine = next(r for r in step["lesions"] if r["tracking_uid"] == "2.25.2")
    # 12 -> 13 mm is +8 % (< 20 %): stable; the volume grows (13/12)^3 - 1 = 27 % (< 30 %): stable
    assert spine["by"] == {"grade": "stable", "size_mm": "stable", "volume_ml": "stable"}


def test_bone_units_change_by_score_and_by_measures_where_measured():
    cases = _tracked_cohort()
    result = cohort.followup(cases, "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"))
    [step] = result["patients"][0]["steps"]
    units = {u["unit"]: u for u in step["units"]}
    # grades per unit: femur 2 -> 1, spine 2 -> 2, ilium 1 -> 0, tibia 1 -> 0 (its lesion is gone from the
    # later read: the unit has no lesion there), clavicle 0 -> 2
    assert {u: e["change"] for u, e in units.items()} == {
        "femur.distal:R": "improved", "spine.L2": "stable", "ilium:L": "resolved", "tibia.shaft:L": "resolved",
        "clavicle.medial:L": "new"}
    assert step["counts"] == {"new": 1, "resolved": 2, "improved": 1, "stable": 1, "worse": 0}
    assert units["femur.distal:R"]["by"]["size_mm"] == "improved"
    assert units["spine.L2"]["by"] == {"grade": "stable", "size_mm": "stable", "volume_ml": "stable"}


def test_reads_without_shared_tracking_uids_fall_back_to_bone_units():
    a = _read("a0", "CNO-0003", [_lesion(1, "2.25.10", "femur.distal", "R", 2)])
    b = _read("a1", "CNO-0004", [_lesion(1, "2.25.20", "femur.distal", "R", 1)])  # blinded: its own UIDs
    cases = [Case("CNO-0003", "P2", 1, reads={"dr-a": a}), Case("CNO-0004", "P2", 2, reads={"dr-a": b})]
    result = cohort.followup(cases, "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"), "unpaired-blinded")
    [step] = result["patients"][0]["steps"]
    assert step["matching"] == "bone unit" and step["lesions"] == []
    assert step["counts"]["improved"] == 1 and sum(step["lesion_counts"].values()) == 0


def test_measure_thresholds():
    assert cohort.measure_change("size_mm", 10.0, 8.0) == "improved"  # -20 %
    assert cohort.measure_change("size_mm", 10.0, 8.5) == "stable"
    assert cohort.measure_change("volume_ml", 1.0, 1.3) == "worse"
    assert cohort.measure_change("stir_muscle_ratio", 2.0, None) is None
    assert cohort.measure_change("grade", 3.0, 3.0) == "stable"


def test_a_persisting_lesion_without_grades_reports_not_graded_never_a_blank():
    """Data from before the rule (or a prior read graded nowhere): the change says why it is missing."""
    before = [_lesion(1, "2.25.31", "femur.distal", "R", 2), _lesion(2, "2.25.32", "spine.L2", None, 1)]
    after = [dataclasses.replace(_lesion(1, "2.25.31", "femur.distal", "R", 2), grades={}),
             dataclasses.replace(_lesion(2, "2.25.32", "spine.L2", None, 1), grades={"marrow_hyperintensity": "NA"})]
    outcomes = {"2.25.31": "persisting", "2.25.32": "persisting"}
    r0 = _read("g0", "CNO-0011", before)
    r1 = _read("g1", "CNO-0012", after, Followup("g0", outcomes))
    cases = [Case("CNO-0011", "P3", 1, reads={"dr-a": r0}), Case("CNO-0012", "P3", 2, reads={"dr-a": r1})]
    result = cohort.followup(cases, "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"))
    [step] = result["patients"][0]["steps"]
    assert {r["tracking_uid"]: r["change"] for r in step["lesions"]} == {"2.25.31": "not graded",
                                                                          "2.25.32": "not graded"}
    assert sum(step["lesion_counts"].values()) == 0 and step["not_graded"] == 2
    report = {"sections": {"followup": result}}
    header, rows = table_rows(report)["followup_lesions.csv"]
    assert [row["change"] for row in rows] == ["not graded", "not graded"]


def test_a_follow_up_read_is_submitted_only_when_every_persisting_lesion_is_graded():
    taxonomy = load_taxonomy("cno-sites-1.0.0")
    graded = _lesion(1, "2.25.41", "femur.distal", "R", 1)
    bare = dataclasses.replace(_lesion(2, "2.25.42", "spine.L2", None, 1), grades={})
    unassessable = dataclasses.replace(_lesion(3, "2.25.43", "ilium", "L", 1), grades={"marrow_hyperintensity": "NA"})
    outcomes = {"2.25.41": "persisting", "2.25.42": "persisting", "2.25.43": "persisting"}
    read = _read("h1", "CNO-0014", [graded, bare, unassessable], Followup("h0", outcomes))
    problems = read_problems(read, taxonomy)
    assert [(p.path, p.reason) for p in problems] == [
        (".lesions[1].grades", "persisting lesion L2 of a submitted follow-up read needs a grade (graded anew at "
                               "this visit; mark the prior lesion not assessable if it cannot be graded)"),
        (".lesions[2].grades", "persisting lesion L3 of a submitted follow-up read needs a grade (graded anew at "
                               "this visit; mark the prior lesion not assessable if it cannot be graded)")]
    draft = dataclasses.replace(read, status="draft")
    assert read_problems(draft, taxonomy) == []  # a draft may wait for its grades
    new = dataclasses.replace(_lesion(4, "2.25.44", "tibia.shaft", "L", 1), grades={})
    assert read_problems(dataclasses.replace(read, lesions=[graded, new],
                                             followup=Followup("h0", {"2.25.41": "persisting"})), taxonomy) == []


def test_each_tracked_lesion_names_its_lesions_the_readers_outcome_and_its_measures_at_both_visits():
    result = cohort.followup(_tracked_cohort(), "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"))
    rows = {r["tracking_uid"]: r for r in result["patients"][0]["steps"][0]["lesions"]}
    assert {uid: (r["from"], r["to"], r["status"]) for uid, r in rows.items()} == {
        "2.25.1": ("L1", "L1", "persisting"), "2.25.2": ("L2", "L2", "persisting"), "2.25.3": ("L3", None, "resolved"),
        "2.25.4": ("L4", None, "not_assessable"), "2.25.5": (None, "L5", None)}
    femur = rows["2.25.1"]["measures"]  # radius 10 -> 5 mm: size is the diameter, volume a sphere's
    assert femur["before"] == {"grade": 2.0, "size_mm": 20.0, "volume_ml": pytest.approx(4 / 3 * math.pi),
                               "stir_muscle_ratio": 3.0}
    assert femur["after"] == {"grade": 1.0, "size_mm": 10.0, "volume_ml": pytest.approx(math.pi / 6),
                              "stir_muscle_ratio": 1.5}
    assert rows["2.25.3"]["measures"]["after"] is None and rows["2.25.5"]["measures"]["before"] is None
    assert rows["2.25.5"]["measures"]["after"] == {"grade": 2.0, "size_mm": None, "volume_ml": None,
                                                   "stir_muscle_ratio": None}


def test_lesions_sharing_tracking_uids_without_a_followup_record_are_matched_with_no_outcome():
    """Reads that share tracking UIDs but whose later read records no outcomes (not a carry-forward read)."""
    before = [_lesion(1, "2.25.41", "femur.distal", "R", 2)]
    after = [_lesion(1, "2.25.41", "femur.distal", "R", 1)]
    cases = [Case("CNO-0021", "P4", 1, reads={"dr-a": _read("s0", "CNO-0021", before)}),
             Case("CNO-0022", "P4", 2, reads={"dr-a": _read("s1", "CNO-0022", after)})]
    result = cohort.followup(cases, "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"))
    [step] = result["patients"][0]["steps"]
    assert step["matching"] == "tracking UID"
    [row] = step["lesions"]
    assert (row["from"], row["to"], row["status"], row["change"]) == ("L1", "L1", None, "improved")


def test_measure_changes_at_their_edges():
    assert cohort.measure_change("grade", 1.0, 2.0) == "worse" and cohort.measure_change("grade", 2.0, 2.0) == "stable"
    assert cohort.measure_change("size_mm", 10.0, 12.0) == "worse"  # +20 %: the threshold itself counts
    assert cohort.measure_change("size_mm", 10.0, 11.5) == "stable"
    # nothing measurable before: any growth is worse, none is stable (a relative change is undefined)
    assert cohort.measure_change("volume_ml", 0.0, 0.5) == "worse"
    assert cohort.measure_change("volume_ml", 0.0, 0.0) == "stable"


def test_a_follow_up_read_whose_prior_lesions_all_resolved_is_still_matched_by_tracking_uid():
    """The later read follows the earlier one (carry-forward) although no UID is shared: one resolved, one new."""
    before = [_lesion(1, "2.25.51", "femur.distal", "R", 2)]
    after = [_lesion(1, "2.25.52", "spine.L2", None, 1)]
    r0 = _read("c0", "CNO-0031", before)
    r1 = _read("c1", "CNO-0032", after, Followup("c0", {"2.25.51": "resolved"}))
    cases = [Case("CNO-0031", "P5", 1, reads={"dr-a": r0}), Case("CNO-0032", "P5", 2, reads={"dr-a": r1})]
    [step] = cohort.followup(cases, "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"))["patients"][0]["steps"]
    assert step["matching"] == "tracking UID"
    assert step["lesion_counts"] == {"new": 1, "resolved": 1, "improved": 0, "stable": 0, "worse": 0}


def test_lesion_counts_add_up_lesions_with_the_same_change():
    before = [_lesion(1, "2.25.61", "femur.distal", "R", 2), _lesion(2, "2.25.62", "spine.L2", None, 1),
              _lesion(3, "2.25.63", "ilium", "L", 1)]
    r0 = _read("d0", "CNO-0041", before)
    r1 = _read("d1", "CNO-0042", [], Followup("d0", dict.fromkeys(("2.25.61", "2.25.62", "2.25.63"), "resolved")))
    cases = [Case("CNO-0041", "P6", 1, reads={"dr-a": r0}), Case("CNO-0042", "P6", 2, reads={"dr-a": r1})]
    [step] = cohort.followup(cases, "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"))["patients"][0]["steps"]
    assert step["lesion_counts"]["resolved"] == 3 and step["counts"]["resolved"] == 3


def test_each_unit_entry_states_its_scores_and_new_or_resolved_units_have_no_measure_changes():
    cases = _tracked_cohort()
    [step] = cohort.followup(cases, "dr-a", load_scheme(), load_taxonomy("cno-sites-1.0.0"))["patients"][0]["steps"]
    units = {u["unit"]: u for u in step["units"]}
    assert {u: (e["before"], e["after"]) for u, e in units.items()} == {
        "femur.distal:R": (2, 1), "spine.L2": (2, 2), "ilium:L": (1, 0), "tibia.shaft:L": (1, 0),
        "clavicle.medial:L": (0, 2)}
    assert units["clavicle.medial:L"]["by"] == {} and units["ilium:L"]["by"] == {}


def test_a_unit_not_assessable_at_one_visit_is_skipped_and_the_units_after_it_still_count():
    taxonomy = load_taxonomy("cno-sites-1.0.0")
    before = [_lesion(1, "2.25.71", "clavicle.medial", "L", 2), _lesion(2, "2.25.72", "femur.distal", "R", 2)]
    after = [_lesion(2, "2.25.72", "femur.distal", "R", 1)]
    r0 = _read("e0", "CNO-0051", before)
    r1 = dataclasses.replace(_read("e1", "CNO-0052", after),
                             unit_marks={taxonomy.unit_id("clavicle.medial", "L"): "not_assessable"})
    cases = [Case("CNO-0051", "P7", 1, reads={"dr-a": r0}), Case("CNO-0052", "P7", 2, reads={"dr-a": r1})]
    [step] = cohort.followup(cases, "dr-a", load_scheme(), taxonomy)["patients"][0]["steps"]
    # clavicle.medial:L sorts first and is not assessable later: no change; femur.distal:R 2 -> 1 improved
    assert [u["unit"] for u in step["units"]] == ["femur.distal:R"]
    assert step["counts"] == {"new": 0, "resolved": 0, "improved": 1, "stable": 0, "worse": 0}


def test_the_followup_figure_draws_each_patients_totals_over_its_timepoints():
    from cno_annotate.analysis import figures

    result = {"patients": [{"patient": "P1", "timepoints": [1, 2, 3], "totals": [8, 7, 3]},
                           {"patient": "P2", "timepoints": [1, 3], "totals": [2, 4]}]}
    [ax] = figures.followup_figure(result).axes
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()), line.get_marker())
             for line in ax.get_lines()}
    assert lines == {"P1": ([1, 2, 3], [8, 7, 3], "o"), "P2": ([1, 3], [2, 4], "o")}
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "timepoint", "total score (points)", "Follow-up: total score per patient")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["P1", "P2"]
    assert list(ax.get_xticks()) == [1, 2, 3]
    [empty] = figures.followup_figure({"patients": []}).axes
    assert [t.get_text() for t in empty.texts] == ["No patient has more than one timepoint"] and not empty.axison

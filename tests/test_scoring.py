"""Scoring against hand-computed golden tables, for both schemes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cno_annotate.annotation.scheme import NOT_ASSESSABLE, load_scheme
from cno_annotate.annotation.scoring import score_read
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.annotation.validation import InvalidLesion
from tests.lesions import graded_lesion

GOLDEN = json.loads((Path(__file__).parent / "golden" / "scoring.json").read_text())["cases"]


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_golden_scores(case):
    # the golden tables were computed by hand with cno-sites 1.0.0 (SI joint as a unit, sacrum as a vertebra)
    scheme, taxonomy = load_scheme(case["scheme"], case.get("scheme_version", "1.0.0")), load_taxonomy("cno-sites-1.0.0")
    lesions = [_lesion_of(finding, scheme, taxonomy) for finding in case["findings"]]
    scores = score_read(lesions, case["unit_marks"], scheme, taxonomy)
    expected = case["expected"]
    assert scores.total == expected["total"]
    assert scores.lesions == expected["lesions"]
    assert {u: s.score for u, s in scores.units.items()} == expected["units"]
    assert scores.regions == expected["regions"]
    assert scores.groups == expected["groups"]
    assert (scores.units_with_lesion, scores.units_no_lesion, scores.units_not_assessable) == (
        expected["units_with_lesion"], expected["units_no_lesion"], expected["units_not_assessable"])
    assert scores.unplaced_lesions == expected["unplaced"]
    assert scores.scheme == {"id": scheme.id, "version": scheme.version}


def _lesion_of(finding: dict, scheme, taxonomy):
    """The golden finding as a lesion; a grade for an item that does not apply to its site is refused first.

    Some golden findings carry such a grade (its note says it is ignored): the one lesion constructor
    refuses it, so the read that is scored holds the lesion without it.
    """
    unit_type = taxonomy.site(finding["site_id"]).unit_type if finding["site_id"] else None
    applies = {k: v for k, v in finding["grades"].items() if unit_type is None or scheme.item(k).applies(unit_type)}
    if applies != finding["grades"]:
        with pytest.raises(InvalidLesion, match="is not graded for"):
            graded_lesion(finding["lesion_id"], finding["site_id"], finding["side"], finding["grades"], scheme=scheme,
                          taxonomy=taxonomy)
    return graded_lesion(finding["lesion_id"], finding["site_id"], finding["side"], applies, scheme=scheme,
                         taxonomy=taxonomy)


def test_na_unit_items_stay_na():
    scheme, taxonomy = load_scheme("cno-descriptive"), load_taxonomy()
    lesion = graded_lesion("L1", "talus", "L", {"stir_hyperintensity": 1, "contrast_enhancement": "NA"}, scheme=scheme,
                           taxonomy=taxonomy)
    unit = score_read([lesion], {}, scheme, taxonomy).units["talus:L"]
    assert unit.items["contrast_enhancement"] == NOT_ASSESSABLE and unit.items["stir_hyperintensity"] == 1


def test_unit_scores_never_exceed_seven_for_rai_cromris():
    scheme, taxonomy = load_scheme("rai-cromris"), load_taxonomy()
    for site in taxonomy.sites.values():
        side = "R" if site.lateral else None
        top = {i.id: max(i.values) for i in scheme.items_for(site.unit_type)}
        scores = score_read([graded_lesion("L1", site.id, side, top, scheme=scheme, taxonomy=taxonomy)], {}, scheme,
                            taxonomy)
        assert scores.total <= 7, site.id
        assert scores.total == 7 or site.unit_type == "joint", site.id  # joints: 2 + 3 + 1 = 6


def test_scoring_is_pure():
    scheme, taxonomy = load_scheme(), load_taxonomy()
    grades = {"marrow_hyperintensity": 2}
    lesions = [graded_lesion("L1", "femur.distal", "R", grades, scheme=scheme, taxonomy=taxonomy)]
    marks = {"spine.L5": "not_assessable"}
    first = score_read(lesions, marks, scheme, taxonomy)
    second = score_read(lesions, marks, scheme, taxonomy)
    assert first == second and grades == {"marrow_hyperintensity": 2} and marks == {"spine.L5": "not_assessable"}


def test_a_unit_marked_not_assessable_drops_its_lesions_with_a_warning():
    scheme, taxonomy = load_scheme(), load_taxonomy()
    scores = score_read([graded_lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 2}, scheme=scheme,
                                       taxonomy=taxonomy)],
                        {"femur.distal:R": "not_assessable"}, scheme, taxonomy)
    assert scores.total == 0 and scores.units_not_assessable == 1 and scores.warnings

"""Scoring rules that mutation testing (stress/mutation_run.py) showed no test pinned down.

Each test names the rule; the expected numbers are derived by hand from the scheme file.
"""

from __future__ import annotations

import copy

from cno_annotate.annotation.model import Lesion
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Scheme, load_scheme
from cno_annotate.annotation.scoring import score_read
from cno_annotate.annotation.taxonomy import load_taxonomy
from tests.lesions import graded_lesion

SCHEME = load_scheme("rai-cromris", "2.0.0")
TAXONOMY = load_taxonomy("cno-sites-2.0.0")


def lesion(lesion_id: str, site_id: str | None, side: str | None, grades: dict) -> Lesion:
    return graded_lesion(lesion_id, site_id, side, grades, scheme=SCHEME, taxonomy=TAXONOMY)


def _variant(unit_combine: str = "max", unscored_first: bool = False) -> Scheme:
    """RAI-CROMRIS 2.0.0 with another way of combining lesions, or an unscored item listed first."""
    document = copy.deepcopy(SCHEME.document)
    document["aggregation"]["unit_combine"] = unit_combine
    if unscored_first:
        note = copy.deepcopy(document["items"][0])
        note.update(id="note", label="Note", scored=False)
        document["items"].insert(0, note)
    return Scheme(document)


def test_lesions_after_an_unplaced_one_are_still_scored():
    lesions = [lesion("L1", None, None, {"marrow_hyperintensity": 2}),
                lesion("L2", "femur.distal", "R", {"marrow_hyperintensity": 2})]
    scores = score_read(lesions, {}, SCHEME, TAXONOMY)
    assert scores.unplaced_lesions == ["L1"] and scores.units_with_lesion == 1 and scores.total == 2


def test_units_after_a_not_assessable_unit_with_lesions_are_still_scored():
    lesions = [lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 2}),
                lesion("L2", "tibia.proximal", "L", {"marrow_hyperintensity": 1})]
    na_unit = TAXONOMY.unit_id("femur.distal", "R")
    scores = score_read(lesions, {na_unit: "not_assessable"}, SCHEME, TAXONOMY)
    assert scores.units[na_unit].status == "not_assessable" and scores.total == 1
    assert scores.warnings == [f"{na_unit} is marked not assessable but has lesions; they are left out"]


def test_a_unit_marked_not_assessable_without_lesions_gives_no_warning():
    lesions = [lesion("L1", "tibia.proximal", "L", {"marrow_hyperintensity": 1})]
    scores = score_read(lesions, {TAXONOMY.unit_id("femur.distal", "R"): "not_assessable"}, SCHEME, TAXONOMY)
    assert scores.warnings == [] and scores.units_not_assessable == 1


def test_units_are_listed_by_id_in_the_json_form():
    lesions = [lesion("L1", "tibia.proximal", "L", {"marrow_hyperintensity": 1}),
                lesion("L2", "femur.distal", "R", {"marrow_hyperintensity": 1})]
    units = score_read(lesions, {"spine.L5": "no_lesion"}, SCHEME, TAXONOMY).as_dict()["units"]
    ids = [u["unit_id"] for u in units]
    assert ids == sorted(ids) and len(ids) == 3


def test_lesions_combine_by_sum_when_the_scheme_says_so():
    lesions = [lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 1}),
                lesion("L2", "femur.distal", "R", {"marrow_hyperintensity": 2})]
    unit = TAXONOMY.unit_id("femur.distal", "R")
    assert score_read(lesions, {}, SCHEME, TAXONOMY).units[unit].items["marrow_hyperintensity"] == 2  # max
    summed = score_read(lesions, {}, _variant("sum"), TAXONOMY).units[unit]
    assert summed.items["marrow_hyperintensity"] == 3 and summed.score == 3


def test_an_unscored_item_listed_first_does_not_hide_the_scored_ones():
    lesions = [lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 2})]
    scores = score_read(lesions, {}, _variant(unscored_first=True), TAXONOMY)
    assert scores.total == 2 and "note" not in scores.units[TAXONOMY.unit_id("femur.distal", "R")].items


def test_items_left_ungraded_do_not_make_a_unit_incomplete():
    """Only an item someone graded "not assessable" flags the unit; an item nobody graded does not."""
    unit = TAXONOMY.unit_id("femur.distal", "R")
    graded = score_read([lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 2})], {}, SCHEME, TAXONOMY)
    assert graded.units[unit].complete and graded.complete
    said_na = score_read([lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 2,
                                                              "soft_tissue_periosteal": NOT_ASSESSABLE})],
                         {}, SCHEME, TAXONOMY)
    assert not said_na.units[unit].complete and said_na.units[unit].score == 2
    by_reader = score_read([lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 2})], {}, SCHEME, TAXONOMY,
                           unit_grades={unit: {"signal_extension": 1}})
    assert by_reader.units[unit].complete and by_reader.units[unit].score == 3


def test_a_unit_whose_every_item_was_said_not_assessable_keeps_its_lesions_and_items():
    unit = TAXONOMY.unit_id("femur.distal", "R")
    na = dict.fromkeys(("marrow_hyperintensity", "soft_tissue_periosteal", "bony_expansion"), NOT_ASSESSABLE)
    scores = score_read([lesion("L1", "femur.distal", "R", na), lesion("L2", "femur.distal", "R", na)], {},
                        SCHEME, TAXONOMY, unit_grades={unit: {"signal_extension": NOT_ASSESSABLE}})
    result = scores.units[unit]
    assert (result.unit_id, result.status, result.score, result.complete) == (unit, "not_assessable", None, False)
    assert result.lesions == ["L1", "L2"] and result.proposed == []
    assert result.items == dict.fromkeys(result.items, NOT_ASSESSABLE) and "marrow_hyperintensity" in result.items
    assert scores.total == 0 and not scores.complete


def test_a_scored_unit_lists_its_lesions():
    lesions = [lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 2, "signal_extension": 3}),
                lesion("L2", "femur.distal", "R", {"marrow_hyperintensity": 2, "soft_tissue_periosteal": 1,
                                                    "bony_expansion": 1})]
    result = score_read(lesions, {}, SCHEME, TAXONOMY).units[TAXONOMY.unit_id("femur.distal", "R")]
    assert result.lesions == ["L1", "L2"] and result.status == "lesion" and result.score <= 7


def test_a_unit_score_is_capped_at_the_schemes_unit_max():
    # With lesions summed, two femur lesions (marrow 2, soft tissue 1, expansion 1 each) give
    # items 4 + 2 + 2 = 8; RAI-CROMRIS caps a unit at 7.
    grades = {"marrow_hyperintensity": 2, "soft_tissue_periosteal": 1, "bony_expansion": 1}
    lesions = [lesion("L1", "femur.distal", "R", grades), lesion("L2", "femur.distal", "R", grades)]
    result = score_read(lesions, {}, _variant("sum"), TAXONOMY).units[TAXONOMY.unit_id("femur.distal", "R")]
    assert sum(v for v in result.items.values() if v is not None) == 8 and result.score == 7


def test_a_grade_from_another_lesion_or_the_reader_overrides_a_said_not_assessable():
    """An item one lesion calls "not assessable" but another lesion, or the reader's unit grade, grades is
    assessable: the unit (and the read's total) is complete, not flagged."""
    unit = TAXONOMY.unit_id("femur.distal", "R")
    by_lesion = score_read([lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": NOT_ASSESSABLE}),
                            lesion("L2", "femur.distal", "R", {"marrow_hyperintensity": 2})], {}, SCHEME, TAXONOMY)
    assert by_lesion.units[unit].items["marrow_hyperintensity"] == 2
    assert by_lesion.units[unit].complete and by_lesion.complete and by_lesion.units[unit].score == 2
    by_reader = score_read([lesion("L1", "femur.distal", "R", {"marrow_hyperintensity": 1,
                                                                "signal_extension": NOT_ASSESSABLE})],
                           {}, SCHEME, TAXONOMY, unit_grades={unit: {"signal_extension": 2}})
    assert by_reader.units[unit].items["signal_extension"] == 2
    assert by_reader.units[unit].complete and by_reader.complete and by_reader.units[unit].score == 3

"""RAI-CROMRIS graded per bone unit (scheme 2.0.0): extent per unit, not assessable is never 0, applicability.

Expected numbers are derived by hand from the scheme file's grades (written next to each assertion).
"""

from __future__ import annotations

import json

import pytest

from cno_annotate.annotation.model import Lesion
from cno_annotate.annotation.resources import schemas_dir
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, load_scheme
from cno_annotate.annotation.scoring import score_read
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.errors import CnoError
from tests.lesions import graded_lesion
from tests.voxels import voxel_at

SCHEME = load_scheme("rai-cromris", "2.0.0")
TAXONOMY = load_taxonomy("cno-sites-2.0.0")


def lesion(lesion_id: str, site_id: str | None, side: str | None, grades: dict) -> Lesion:
    return graded_lesion(lesion_id, site_id, side, grades, scheme=SCHEME, taxonomy=TAXONOMY)


def grades(marrow, extent, soft=0, expansion=0) -> dict:
    return {"marrow_hyperintensity": marrow, "signal_extension": extent, "soft_tissue_periosteal": soft,
            "bony_expansion": expansion}


def test_the_scheme_file_declares_how_each_item_is_graded():
    document = json.loads((schemas_dir() / "schemes" / "rai-cromris-2.0.0.json").read_text())
    per = {i["id"]: (i["graded_per"], i.get("unit_grade_from_lesions")) for i in document["items"]}
    assert per["signal_extension"] == ("unit", "share_sum")
    assert {k: v[0] for k, v in per.items() if k != "signal_extension"} == dict.fromkeys(
        ("marrow_hyperintensity", "soft_tissue_periosteal", "bony_expansion", "vertebral_collapse"), "lesion")
    # the released 1.0.0 scheme is unchanged and still loads
    assert load_scheme("rai-cromris", "1.0.0").item("signal_extension").graded_per == "lesion"


def test_extent_is_proposed_for_the_whole_unit_from_its_lesions():
    # Two lesions in the right distal femur, each "25-50 %" (grade 2, middle of its range 37.5 %): together
    # 75 %, grade 3 ("over 50 %"). Marrow: the higher lesion grade, 2. Soft tissue 1 (one lesion has it).
    # Unit score 2 + 3 + 1 + 0 = 6. Scheme 1.0.0 (largest lesion extent) gives 2 + 2 + 1 = 5.
    lesions = [lesion("L1", "femur.distal", "R", grades(2, 2, soft=1)),
                lesion("L2", "femur.distal", "R", grades(1, 2))]
    unit = score_read(lesions, {}, SCHEME, TAXONOMY).units["femur.distal:R"]
    assert unit.items == {"marrow_hyperintensity": 2, "signal_extension": 3, "soft_tissue_periosteal": 1,
                          "bony_expansion": 0}
    assert unit.score == 6 and unit.proposed == ["signal_extension"]
    old = score_read(lesions, {}, load_scheme("rai-cromris", "1.0.0"), load_taxonomy("cno-sites-1.0.0"))
    assert old.units["femur.distal:R"].score == 5
    # Lesion sums 2+2+1+0 = 5 and 1+2 = 3 add to 8; the unit is worth 6: lesion values do not add up.
    scores = score_read(lesions, {}, SCHEME, TAXONOMY)
    assert scores.lesions == {"L1": 5, "L2": 3} and scores.total == 6
    # Three lesions of "up to 25 %" (12.5 % each): 37.5 %, grade 2; one alone stays grade 1.
    small = [lesion(f"L{n}", "tibia.proximal", "L", grades(1, 1)) for n in range(3)]
    assert score_read(small, {}, SCHEME, TAXONOMY).units["tibia.proximal:L"].items["signal_extension"] == 2
    assert score_read(small[:1], {}, SCHEME, TAXONOMY).units["tibia.proximal:L"].items["signal_extension"] == 1


def test_the_readers_unit_grade_replaces_the_proposal():
    lesions = [lesion("L1", "femur.distal", "R", grades(2, 2)), lesion("L2", "femur.distal", "R", grades(1, 2))]
    unit = score_read(lesions, {}, SCHEME, TAXONOMY, {"femur.distal:R": {"signal_extension": 2}}).units["femur.distal:R"]
    assert unit.items["signal_extension"] == 2 and unit.proposed == [] and unit.score == 2 + 2 + 0 + 0


def test_not_assessable_lesions_and_units_are_not_zero():
    # T8: its only lesion has every item graded NA -> the lesion and the unit are not assessable.
    # Femur: one lesion with marrow 2, extent NA -> unit scores 2 + 0 + 0 = 2 and is flagged incomplete.
    na = {"marrow_hyperintensity": NOT_ASSESSABLE, "signal_extension": NOT_ASSESSABLE,
          "soft_tissue_periosteal": NOT_ASSESSABLE, "vertebral_collapse": NOT_ASSESSABLE}
    lesions = [lesion("L1", "spine.T8", None, na),
                lesion("L2", "femur.distal", "L", {**grades(2, NOT_ASSESSABLE)})]
    scores = score_read(lesions, {}, SCHEME, TAXONOMY)
    assert scores.lesions["L1"] is None and scores.lesions_not_assessable == ["L1"]
    t8 = scores.units["spine.T8"]
    assert (t8.status, t8.score, t8.lesions) == ("not_assessable", None, ["L1"])
    assert (scores.units_with_lesion, scores.units_not_assessable) == (1, 1)
    femur = scores.units["femur.distal:L"]
    assert femur.score == 2 and not femur.complete
    assert scores.total == 2 and not scores.complete
    # a lesion not graded yet is not "not assessable": it sums to 0
    assert score_read([lesion("L1", "talus", "R", {})], {}, SCHEME, TAXONOMY).lesions == {"L1": 0}


def test_grades_for_items_that_do_not_apply_are_refused():
    with pytest.raises(CnoError, match="Bony expansion is not graded for a vertebra"):
        SCHEME.check_grade("bony_expansion", 1, TAXONOMY.site("spine.T8").unit_type)
    with pytest.raises(CnoError, match="Vertebral collapse is not graded for a flat bone"):
        SCHEME.check_grade("vertebral_collapse", 1, TAXONOMY.site("sacrum").unit_type)
    with pytest.raises(CnoError, match="graded per lesion"):
        SCHEME.check_unit_grade("marrow_hyperintensity", 1, "long_bone_end")
    SCHEME.check_unit_grade("signal_extension", 3, "long_bone_end")


def test_the_editor_refuses_an_item_that_does_not_apply(store):
    from cno_annotate.annotation.reads import ReadSession

    session = ReadSession.open_or_create(store, "1.2.3", "dr-a")
    lesion = session.add_lesion((0, 0, 0), "1.2", (0, 0, 0), site_id="spine.T8")
    with pytest.raises(CnoError, match="Bony expansion is not graded"):
        session.set_grade(lesion, "bony_expansion", 1)
    assert "bony_expansion" not in session.read.lesion(lesion).grades


def test_import_refuses_an_item_that_does_not_apply(store, tmp_path):
    from cno_annotate.annotation.documents import export_document, import_document, write_document
    from cno_annotate.annotation.reads import ReadSession

    session = ReadSession.open_or_create(store, "1.2.3", "dr-a")
    session.add_lesion((0, 0, 0), "1.2", (0, 0, 0), site_id="spine.T8")
    document = export_document(store)
    document["reads"][0]["lesions"][0]["grades"] = {"bony_expansion": 1}
    path = write_document(document, tmp_path / "bad.json")
    with pytest.raises(CnoError, match=r"\$\.reads\[0\]\.lesions\[0\]\.grades\.bony_expansion: Bony expansion"):
        import_document(store, path, replace=True)


def _two_lesions(store, study: str = "1.2.3", series: str = "1.2"):
    from cno_annotate.annotation.reads import ReadSession

    session = ReadSession.open_or_create(store, study, "dr-a")
    for z in (-400, -420):
        voxel = (0, 0, 0) if series == "1.2" else voxel_at(store, series, (-70, 0, z))  # "1.2": not in the store
        lesion = session.add_lesion((-70, 0, z), series, voxel, site_id="femur.distal", side="R")
        session.set_grade(lesion, "marrow_hyperintensity", 2)
        session.set_grade(lesion, "signal_extension", 2)
    return session


def test_the_reader_confirms_or_changes_the_proposed_unit_extent_and_it_is_stored(store):
    from cno_annotate.annotation.reads import ReadSession, load_read

    session = _two_lesions(store)
    # two lesions of 25-50 % propose "over 50 %" (3); marrow 2: unit 2 + 3 = 5
    assert session.unit_grade("femur.distal:R", "signal_extension") == (3, False)
    assert session.scores().total == 5
    session.set_unit_grade("femur.distal:R", "signal_extension", 2)
    assert session.unit_grade("femur.distal:R", "signal_extension") == (2, True)
    assert session.scores().total == 4
    assert load_read(store, session.read.read_id).unit_grades == {"femur.distal:R": {"signal_extension": 2}}
    session.undo()
    assert session.unit_grade("femur.distal:R", "signal_extension") == (3, False)
    assert load_read(store, session.read.read_id).unit_grades == {}
    session.redo()
    reopened = ReadSession.open(store, session.read.read_id)
    assert reopened.unit_grade("femur.distal:R", "signal_extension") == (2, True)
    session.set_unit_grade("femur.distal:R", "signal_extension", "NA")
    assert session.scores().units["femur.distal:R"].complete is False
    session.set_unit_grade("femur.distal:R", "signal_extension", None)  # back to the proposal
    assert session.unit_grade("femur.distal:R", "signal_extension") == (3, False)


def test_unit_grades_that_make_no_sense_are_refused(store):
    session = _two_lesions(store)
    with pytest.raises(CnoError, match="graded per lesion"):
        session.set_unit_grade("femur.distal:R", "marrow_hyperintensity", 1)
    with pytest.raises(CnoError, match="holds no lesion"):
        session.set_unit_grade("femur.distal:L", "signal_extension", 1)
    with pytest.raises(CnoError, match="grade 7 is not one of"):
        session.set_unit_grade("femur.distal:R", "signal_extension", 7)
    assert session.read.unit_grades == {}


def test_unit_grades_survive_export_and_import_and_old_documents_still_import(sample_copy, tmp_path):
    from cno_annotate.annotation.documents import export_document, import_document, write_document

    store = sample_copy("first")
    study = store.studies()[0].study_uid
    series = next(v.series_uid for v in store.volumes(study) if v.kind != "composed" and v.series_uid)
    session = _two_lesions(store, study, series)
    session.set_unit_grade("femur.distal:R", "signal_extension", 2)
    document = export_document(store)
    assert document["schema_version"] == "1.2.0"
    assert document["reads"][0]["unit_grades"] == [{"unit_id": "femur.distal:R", "item_id": "signal_extension",
                                                    "grade": 2}]
    assert document["reads"][0]["scores"]["total"] == 4
    other = sample_copy("other")
    import_document(other, write_document(document, tmp_path / "reads.json"))
    assert export_document(other)["reads"] == document["reads"]
    # a 1.0.0 document (no unit grades) is still accepted
    old = json.loads(json.dumps(document))
    old["schema_version"] = "1.0.0"
    for read in old["reads"]:
        del read["unit_grades"], read["rois"], read["followup"], read["active_seconds"]  # 1.1.0 and 1.2.0 fields
        for lesion in read["lesions"]:
            del lesion["stir_muscle_ratio"], lesion["tracking_uid"]
        del read["scores"]["complete"]  # 1.2.0; before it, an item nobody graded was written NA
        for unit in read["scores"]["units"]:
            unit["items"] = {k: "NA" if v is None else v for k, v in unit["items"].items()}
    third = sample_copy("third")
    import_document(third, write_document(old, tmp_path / "old.json"))
    assert export_document(third)["reads"][0]["scores"]["total"] == 5  # the proposal again
    bad = json.loads(json.dumps(document))
    bad["reads"][0]["unit_grades"][0]["item_id"] = "marrow_hyperintensity"
    with pytest.raises(CnoError, match=r"\$\.reads\[0\]\.unit_grades\[0\]\.grade: .*graded per lesion"):
        import_document(sample_copy("fourth"), write_document(bad, tmp_path / "bad.json"))


def _point_lesions(store):
    """Two point lesions (no extent): marrow graded, extent never graded on one, said NA on the other."""
    from cno_annotate.annotation.reads import ReadSession

    session = ReadSession.open_or_create(store, "1.2.3", "dr-a")
    graded_none = session.add_lesion((-70, 0, -400), "1.2", (0, 0, 0), site_id="femur.distal", side="L")
    session.set_grade(graded_none, "marrow_hyperintensity", 2)
    said_na = session.add_lesion((70, 0, -400), "1.2", (0, 0, 0), site_id="femur.distal", side="R")
    session.set_grade(said_na, "marrow_hyperintensity", 1)
    session.set_grade(said_na, "signal_extension", NOT_ASSESSABLE)
    return session


def test_an_item_nobody_graded_is_exported_empty_and_only_a_said_na_is_na(store):
    from cno_annotate.analysis import cohort
    from cno_annotate.annotation.csv_export import column_rows, read_rows, unit_rows
    from cno_annotate.annotation.documents import document_of
    from cno_annotate.annotation.reads import load_read

    session = _point_lesions(store)
    scores = session.scores()
    left, right = scores.units["femur.distal:L"], scores.units["femur.distal:R"]
    # not graded: no grade (None), not "not assessable"; the totals are unchanged (2 and 1, total 3)
    assert left.items["signal_extension"] is None and left.complete and left.score == 2
    assert right.items["signal_extension"] == NOT_ASSESSABLE and not right.complete and right.score == 1
    assert scores.total == 3 and not scores.complete
    document = document_of([load_read(store, session.read.read_id)])
    units = {u["unit_id"]: u for u in document["reads"][0]["scores"]["units"]}
    assert units["femur.distal:L"]["items"]["signal_extension"] is None
    assert units["femur.distal:R"]["items"]["signal_extension"] == "NA"
    assert document["reads"][0]["scores"]["complete"] is False
    _, rows = unit_rows(document)
    cells = {r["unit_id"]: r["grade_signal_extension"] for r in rows}
    assert cells == {"femur.distal:L": "", "femur.distal:R": "NA"}
    columns, rows = read_rows(document)
    assert "complete" in columns and rows[0]["complete"] == "false"
    meanings = {r["column"]: r["meaning"] for r in column_rows({"reads.csv": columns})[1]}
    assert "incomplete" in meanings["complete"] or "not assessable" in meanings["complete"]
    # the report's design counts the one lesion item grade said NA, not the item never graded
    case = cohort.Case("CNO-0001", "P1", 1, reads={"dr-a": load_read(store, session.read.read_id)})
    text = {d["topic"]: d["text"] for d in cohort.design([case], SCHEME, TAXONOMY)}
    assert "1 lesion item grade" in " ".join(text.values())


def test_a_read_with_every_item_graded_is_complete(store):
    from cno_annotate.annotation.csv_export import read_rows
    from cno_annotate.annotation.documents import document_of
    from cno_annotate.annotation.reads import load_read

    session = _two_lesions(store)
    for lesion in session.read.lesions:
        session.set_grade(lesion.lesion_id, "soft_tissue_periosteal", 0)
        session.set_grade(lesion.lesion_id, "bony_expansion", 0)
    document = document_of([load_read(store, session.read.read_id)])
    assert document["reads"][0]["scores"]["complete"] is True
    assert read_rows(document)[1][0]["complete"] == "true"

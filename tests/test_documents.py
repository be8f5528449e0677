"""Read documents: ``read import`` and the editor refuse the same states, through one validator.

Every refused document is refused whole, with the file, the JSON path and a
one-line reason, and leaves the store exactly as it was (reads, lesions and
audit trail).
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.documents import export_document, import_document
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.errors import CnoError
from cno_annotate.store import audit
from cno_annotate.volumes import open_volume

RS = "trial"


@pytest.fixture
def reading_store(sample_copy):
    """A copy of the sample store with reading study ``trial``: one case, readers dr-a, dr-b, adjudicator dr-adj.

    dr-a has a submitted read: a distal femur lesion (right), a T8 lesion, L5 marked not assessable.
    """
    store = sample_copy()
    rs.create(store, RS)
    rs.add_cases(store, RS, [store.studies()[0].study_uid])
    rs.add_readers(store, RS, ["dr-a", "dr-b"])
    rs.add_readers(store, RS, ["dr-adj", "dr-adj2"], "adjudicator")
    session = _session(store, "dr-a")
    series = store.volumes()[0].volume_id
    volume = open_volume(store, series)
    femur = session.add_lesion((-77.0, 0.0, -420.0), series, volume.lps_to_index((-77.0, 0.0, -420.0)), side="R")
    session.update_lesion(femur, site_id="femur.distal", comment="metaphysis")
    session.set_grade(femur, "marrow_hyperintensity", 2)
    spine = session.add_lesion((0.0, 30.0, -100.0), series, volume.lps_to_index((0.0, 30.0, -100.0)))
    session.update_lesion(spine, site_id="spine.T8")
    session.set_grade(spine, "vertebral_collapse", 1)
    session.mark_unit("spine.L5", "not_assessable")
    session.submit()
    return store


def _session(store, reader: str, role: str = "reader") -> ReadSession:
    return ReadSession.open_or_create(store, store.studies()[0].study_uid, reader, reading_study=RS, role=role)


def _snapshot(store) -> tuple:
    return export_document(store), audit.entries(store.db, 10_000)


def _fresh(document: dict) -> dict:
    """The document's first read as a new read of dr-b (so it does not clash with the stored one)."""
    out = copy.deepcopy(document)
    read = out["reads"][0]
    read["read_id"], read["reader"] = "imported-1", "dr-b"
    return out


def _lateral_lesion(read: dict) -> dict:
    return next(l for l in read["lesions"] if l["site"]["id"] == "femur.distal")


def _midline_lesion(read: dict) -> dict:
    return next(l for l in read["lesions"] if l["site"]["id"] == "spine.T8")


def _second_adjudicator(document: dict) -> None:
    first, second = copy.deepcopy(document["reads"][0]), copy.deepcopy(document["reads"][0])
    first.update(read_id="adj-1", reader="dr-adj", role="adjudicator")
    second.update(read_id="adj-2", reader="dr-adj2", role="adjudicator")
    document["reads"] = [first, second]


REFUSED = [
    ("submitted lesion without a side",
     lambda d: _lateral_lesion(d["reads"][0]).__setitem__("laterality", None),
     r"\$\.reads\[0\]\.lesions\[0\]\.laterality", "needs a side"),
    ("not assessable unit holding a lesion",
     lambda d: d["reads"][0]["unit_marks"].append({"unit_id": "femur.distal:R", "mark": "not_assessable"}),
     r"\$\.reads\[0\]\.unit_marks\[1\]", "holds lesion L1 and cannot be marked not assessable"),
    ("reading study that does not exist",
     lambda d: d["reads"][0].__setitem__("reading_study", "no-such-study"),
     r"\$\.reads\[0\]\.reading_study", "no reading study 'no-such-study'"),
    ("reader not registered in the reading study",
     lambda d: d["reads"][0].__setitem__("reader", "dr-stranger"),
     r"\$\.reads\[0\]\.reader", "'dr-stranger' is not a reader of reading study 'trial'"),
    ("study UID not in the store",
     lambda d: d["reads"][0].__setitem__("study_uid", "1.2.3.4.5.6"),
     r"\$\.reads\[0\]\.study_uid", "study 1.2.3.4.5.6 is not in the store"),
    ("side on a midline site",
     lambda d: _midline_lesion(d["reads"][0]).__setitem__(
         "laterality", _lateral_lesion(d["reads"][0])["laterality"]),
     r"\$\.reads\[0\]\.lesions\[1\]\.laterality", "T8 vertebra is a midline site: it has no side"),
    ("supersedes a read that does not exist",
     lambda d: d["reads"][0].update(supersedes="no-such-read", version=2),
     r"\$\.reads\[0\]\.supersedes", "read no-such-read does not exist"),
    ("two adjudicator reads for one case", _second_adjudicator,
     r"\$\.reads\[1\]\.role", "already has an adjudicated read \\(adj-1\\)"),
    ("series not of the study",
     lambda d: _lateral_lesion(d["reads"][0])["position"].__setitem__("series_uid", "9.9.9"),
     r"\$\.reads\[0\]\.lesions\[0\]\.position\.series_uid", "series 9.9.9 is not a series of study"),
    ("voxel index not at the lesion's position",
     lambda d: _lateral_lesion(d["reads"][0])["position"]["voxel"].__setitem__(
         0, _lateral_lesion(d["reads"][0])["position"]["voxel"][0] + 0.6),
     r"\$\.reads\[0\]\.lesions\[0\]\.position\.voxel",
     r"lesion L1: voxel \[.*\] is more than half a voxel from its position \(-77, 0, -420\) mm, voxel \[.*\] of "),
    ("grade of an item that does not apply to the unit",
     lambda d: _midline_lesion(d["reads"][0])["grades"].__setitem__("bony_expansion", 1),
     r"\$\.reads\[0\]\.lesions\[1\]\.grades\.bony_expansion", "not graded for T8 vertebra"),
    ("revision 2^63",
     lambda d: d["reads"][0].__setitem__("revision", 2**63),
     r"\$\.reads\[0\]\.revision", "out of range"),
]


@pytest.mark.parametrize("name, change, path, why", REFUSED, ids=[r[0] for r in REFUSED])
def test_import_refuses_whole_with_the_json_path_and_changes_nothing(reading_store, tmp_path, name, change, path,
                                                                     why):
    document = _fresh(export_document(reading_store))
    change(document)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    before = _snapshot(reading_store)
    with pytest.raises(CnoError, match=rf"bad\.json: {path}: .*{why}") as refused:
        import_document(reading_store, bad)
    assert "\n" not in str(refused.value)
    assert _snapshot(reading_store) == before


def test_the_unchanged_document_imports(reading_store, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_fresh(export_document(reading_store))))
    assert import_document(reading_store, good) == ["imported-1"]


@pytest.mark.parametrize("name, text, path, why", [
    ("duplicate key", lambda t: t.replace('"reader": "dr-b"', '"reader": "dr-b", "reader": "dr-a"', 1),
     r"\$\.reads\[0\]", "key 'reader' appears twice"),
    ("lone surrogate", lambda t: t.replace('"comment": "metaphysis"', '"comment": "meta\\ud800physis"', 1),
     r"\$\.reads\[0\]\.lesions\[0\]\.comment", "unpaired surrogate"),
    ("NaN", lambda t: re.sub(r'("lps_mm": \[\s*)-77\.0', r"\1NaN", t, count=1),
     r"\$\.reads\[0\]\.lesions\[0\]\.position\.lps_mm\[0\]", "NaN is not a JSON number"),
    ("Infinity", lambda t: t.replace('"revision": ', '"revision": Infinity, "x": ', 1),
     r"\$\.reads\[0\]\.revision", "Infinity is not a JSON number"),
    ("deep nesting", lambda t: t.replace('"reason": null', '"reason": ' + "[" * 5000 + "]" * 5000, 1),
     r"\$", "nested more than 32 levels deep"),
    ("moderately deep nesting", lambda t: t.replace('"reason": null', '"reason": ' + "[" * 40 + "]" * 40, 1),
     r"\$\.reads\[0\]\.reason(\[0\])+", "nested more than 32 levels deep"),
])
def test_import_refuses_what_strict_json_refuses(reading_store, tmp_path, name, text, path, why):
    document = json.dumps(_fresh(export_document(reading_store)), indent=2)
    changed = text(document)
    assert changed != document
    bad = tmp_path / "bad.json"
    bad.write_text(changed)
    before = _snapshot(reading_store)
    with pytest.raises(CnoError, match=rf"bad\.json: {path}: .*{why}") as refused:
        import_document(reading_store, bad)
    assert "\n" not in str(refused.value)
    assert _snapshot(reading_store) == before


# -- the editor refuses the same states -----------------------------------------------------------
def test_editor_refuses_submitting_a_lesion_without_its_side(reading_store):
    session = _session(reading_store, "dr-b")
    lesion = session.add_lesion((-77.0, 0.0, -420.0), reading_store.volumes()[0].volume_id, (40, 337, 6))
    session.update_lesion(lesion, site_id="femur.distal")
    with pytest.raises(CnoError, match="without a site or side: L1"):
        session.submit()
    assert session.read.status == "draft"


def test_editor_refuses_a_lesion_in_a_unit_marked_not_assessable(reading_store):
    session = _session(reading_store, "dr-b")
    session.mark_unit("femur.distal:R", "not_assessable")
    lesion = session.add_lesion((-77.0, 0.0, -420.0), reading_store.volumes()[0].volume_id, (40, 337, 6),
                                side="R")
    revision = session.read.revision
    with pytest.raises(CnoError, match="Distal femur R holds lesion L1 and cannot be marked not assessable"):
        session.update_lesion(lesion, site_id="femur.distal")
    assert session.read.revision == revision and session.read.lesion(lesion).site_id is None
    with pytest.raises(CnoError, match="has lesions"):  # and the other way round
        session.update_lesion(lesion, site_id="femur.distal", side="L")
        session.mark_unit("femur.distal:L", "not_assessable")


def test_editor_refuses_a_grade_that_does_not_apply_to_the_unit(reading_store):
    session = _session(reading_store, "dr-b")
    lesion = session.add_lesion((0.0, 30.0, -100.0), reading_store.volumes()[0].volume_id, (64, 20, 6))
    session.set_grade(lesion, "bony_expansion", 1)  # no site yet: every item may be graded
    with pytest.raises(CnoError, match="Bony expansion is not graded for T8 vertebra"):
        session.update_lesion(lesion, site_id="spine.T8")
    session.set_grade(lesion, "bony_expansion", None)
    session.update_lesion(lesion, site_id="spine.T8")
    with pytest.raises(CnoError, match="not graded for T8 vertebra"):
        session.set_grade(lesion, "bony_expansion", 1)


def test_editor_refuses_reading_studies_and_readers_that_do_not_exist(reading_store):
    uid = reading_store.studies()[0].study_uid
    with pytest.raises(CnoError, match="no reading study 'nope'"):
        ReadSession.open_or_create(reading_store, uid, "dr-a", reading_study="nope")
    with pytest.raises(CnoError, match="'dr-stranger' is not a reader of reading study 'trial'"):
        ReadSession.open_or_create(reading_store, uid, "dr-stranger", reading_study=RS)
    with pytest.raises(CnoError, match="registered as reader .* not adjudicator"):
        ReadSession.open_or_create(reading_store, uid, "dr-b", reading_study=RS, role="adjudicator")


def test_editor_refuses_a_second_adjudicator_for_a_case(reading_store):
    second = _session(reading_store, "dr-adj2", "adjudicator")  # opened, nothing stored yet
    _session(reading_store, "dr-adj", "adjudicator").mark_unit("spine.L5", "no_lesion")  # the read is made
    with pytest.raises(CnoError, match="already has an adjudicated read"):
        _session(reading_store, "dr-adj2", "adjudicator")
    with pytest.raises(CnoError, match="already has an adjudicated read"):
        second.mark_unit("spine.L4", "no_lesion")  # checked again when the first change makes the read
    assert _session(reading_store, "dr-adj", "adjudicator").read.reader == "dr-adj"  # the first one reopens


def test_editor_refuses_text_that_no_export_could_write(reading_store):
    session = _session(reading_store, "dr-b")
    lesion = session.add_lesion((-77.0, 0.0, -420.0), reading_store.volumes()[0].volume_id, (40, 337, 6))
    with pytest.raises(CnoError, match="unpaired surrogate"):
        session.update_lesion(lesion, comment="bad \ud800 text")
    with pytest.raises(CnoError, match="finite number"):
        session.update_lesion(lesion, position=(float("nan"), 0.0, 0.0))
    assert session.read.lesion(lesion).comment == ""


def test_a_position_beyond_10_m_from_the_origin_is_refused_by_editor_and_validator(reading_store):
    from cno_annotate.annotation.scheme import load_scheme
    from cno_annotate.annotation.taxonomy import load_taxonomy
    from cno_annotate.annotation.validation import make_lesion

    session = _session(reading_store, "dr-b")
    lesion = session.add_lesion((-77.0, 0.0, -420.0), reading_store.volumes()[0].volume_id, (40, 337, 6))
    with pytest.raises(CnoError, match=r"within 10 m \(10000 mm\) of the origin"):
        session.update_lesion(lesion, position=(1e308, 0.0, 0.0))
    assert session.read.lesion(lesion).position == (-77.0, 0.0, -420.0)
    with pytest.raises(CnoError, match=r"within 10 m \(10000 mm\) of the origin"):
        make_lesion(load_taxonomy(), load_scheme(), lesion_id="L9", position=[0.0, -10000.5, 0.0], series_uid="1.2",
                    voxel=[0, 0, 0])
    assert make_lesion(load_taxonomy(), load_scheme(), lesion_id="L9", position=[0.0, -9999.0, 0.0],
                       series_uid="1.2", voxel=[0, 0, 0]).position == (0.0, -9999.0, 0.0)


def test_a_voxel_index_within_half_a_voxel_of_its_position_imports(reading_store, tmp_path):
    document = _fresh(export_document(reading_store))
    voxel = _lateral_lesion(document["reads"][0])["position"]["voxel"]
    voxel[:] = [v + 0.45 for v in voxel]  # the editor keeps fractional indices; a rounded one is as good
    good = tmp_path / "good.json"
    good.write_text(json.dumps(document))
    assert import_document(reading_store, good) == ["imported-1"]

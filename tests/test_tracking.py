"""Tracking UIDs: every lesion carries a DICOM UID, given at creation, kept through edits, versions and exports."""

from __future__ import annotations

import csv
import json

import pytest

from cno_annotate.annotation.csv_export import write_tables
from cno_annotate.annotation.documents import export_document, import_document, write_document
from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import DEFAULT_TAXONOMY, load_taxonomy
from cno_annotate.annotation.validation import InvalidLesion, make_lesion
from cno_annotate.errors import CnoError
from cno_annotate.uids import is_uid
from tests.voxels import voxel_at


@pytest.fixture
def store(sample_copy):
    """A copy of the sample store (one study)."""
    return sample_copy("tracking")


def _series(store) -> str:
    return next(v.volume_id for v in store.volumes() if v.kind == "composed" and v.role == "STIR")


def _two_lesions(store) -> ReadSession:
    session = ReadSession.open_or_create(store, store.studies()[0].study_uid, "dr-a")
    for position, site, side in (((-77.0, 0.0, -420.0), "femur.distal", "R"), ((0.0, 0.0, -100.0), "spine.L2", None)):
        session.add_lesion(position, _series(store), voxel_at(store, _series(store), position), site_id=site, side=side)
    return session


def test_a_new_lesion_gets_a_uid_of_its_own_that_edits_and_undo_keep(store):
    session = _two_lesions(store)
    first, second = session.read.lesions
    assert is_uid(first.tracking_uid) and is_uid(second.tracking_uid)
    assert first.tracking_uid != second.tracking_uid
    session.update_lesion(first.lesion_id, comment="edited", site_id="tibia.proximal")
    session.set_grade(first.lesion_id, "marrow_hyperintensity", 2)
    session.undo()
    assert session.read.lesion(first.lesion_id).tracking_uid == first.tracking_uid
    with pytest.raises(CnoError, match="cannot edit tracking_uid"):
        session.update_lesion(first.lesion_id, tracking_uid="1.2.3")
    assert load_read(store, session.read.read_id).lesion(first.lesion_id).tracking_uid == first.tracking_uid


def test_a_new_version_keeps_every_lesions_uid(store):
    session = _two_lesions(store)
    before = [l.tracking_uid for l in session.read.lesions]
    session.submit()
    newer = ReadSession.new_version(store, session.read.read_id, "dr-a", "second look")
    assert [l.tracking_uid for l in newer.read.lesions] == before
    added = newer.add_lesion((5.0, 0.0, -150.0), _series(store), voxel_at(store, _series(store), (5.0, 0.0, -150.0)),
                             site_id="spine.L3")
    assert newer.read.lesion(added).tracking_uid not in before


def test_json_and_csv_exports_carry_the_uid_and_import_keeps_it(store, tmp_path):
    session = _two_lesions(store)
    uids = [l.tracking_uid for l in session.read.lesions]
    document = export_document(store)
    assert document["schema_version"] == "1.2.0"
    assert [l["tracking_uid"] for l in document["reads"][0]["lesions"]] == uids
    path = write_document(document, tmp_path / "reads.json")
    write_tables(document, tmp_path / "csv")
    with open(tmp_path / "csv" / "lesions.csv", newline="", encoding="utf-8") as handle:
        assert [row["tracking_uid"] for row in csv.DictReader(handle)] == uids
    import_document(store, path, replace=True)
    assert [l.tracking_uid for l in load_read(store, session.read.read_id).lesions] == uids


def test_an_older_document_without_uids_gets_new_ones_and_a_bad_uid_is_refused_with_its_path(store, tmp_path):
    session = _two_lesions(store)
    document = export_document(store)
    old = json.loads(json.dumps(document))
    old["schema_version"] = "1.1.0"
    for read in old["reads"]:
        del read["followup"], read["rois"], read["active_seconds"], read["scores"]["complete"]  # 1.2.0 fields
        for unit in read["scores"]["units"]:  # before 1.2.0 an item nobody graded was written NA
            unit["items"] = {k: "NA" if v is None else v for k, v in unit["items"].items()}
        for lesion in read["lesions"]:
            del lesion["tracking_uid"], lesion["stir_muscle_ratio"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    import_document(store, tmp_path / "old.json", replace=True)
    given = [l.tracking_uid for l in load_read(store, session.read.read_id).lesions]
    assert all(is_uid(u) for u in given) and len(set(given)) == 2
    for bad, reason in (("1.02.3", "tracking_uid"), ("1." + "2" * 70, "tracking_uid")):
        broken = json.loads(json.dumps(document))
        broken["reads"][0]["lesions"][0]["tracking_uid"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(CnoError, match=reason):
            import_document(store, tmp_path / "bad.json", replace=True)
    twice = json.loads(json.dumps(document))
    twice["reads"][0]["lesions"][1]["tracking_uid"] = twice["reads"][0]["lesions"][0]["tracking_uid"]
    (tmp_path / "twice.json").write_text(json.dumps(twice))
    with pytest.raises(CnoError, match=r"lesions\[1\].tracking_uid: lesions L1 and L2 have the same tracking UID"):
        import_document(store, tmp_path / "twice.json", replace=True)
    assert [l.tracking_uid for l in load_read(store, session.read.read_id).lesions] == given  # nothing changed


def test_the_one_validator_refuses_a_uid_that_is_not_a_dicom_uid():
    taxonomy, scheme = load_taxonomy(DEFAULT_TAXONOMY), load_scheme()
    base = {"lesion_id": "L1", "position": (0, 0, 0), "series_uid": "1.2.3", "voxel": (0, 0, 0)}
    assert is_uid(make_lesion(taxonomy, scheme, **base).tracking_uid)
    for bad in ("", "abc", "1..2", "1.2.", "01.2", 12):
        with pytest.raises(InvalidLesion) as caught:
            make_lesion(taxonomy, scheme, **base, tracking_uid=bad)
        assert caught.value.problem.path == ".tracking_uid"
    assert make_lesion(taxonomy, scheme, **base, tracking_uid="2.25.1").tracking_uid == "2.25.1"

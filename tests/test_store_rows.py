"""The store's typed rows: what a store module writes comes back field by field, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from cno_annotate.clinical import CoordinatorDB
from cno_annotate.store import clinical, derived
from cno_annotate.store import reading_studies as table
from cno_annotate.store.clinical import PainfulSite, Treatment, Visit
from cno_annotate.store.reading_studies import Case, ReadingDesign, ReadingStudy, Registration, WorklistEntry

STORE_BACKENDS = ("sqlite", "postgresql")


def test_reading_study_rows_come_back_typed_with_named_fields(store):
    settings = ReadingStudy("t", "rai-cromris", "2.0.0", 7, False, True, ReadingDesign.PAIRED_HIDDEN_ORDER, True,
                            45.0)
    with store.transaction() as db:
        table.add(db, settings, "2026-11-28T12:00:00Z", "coordinator")
        for code, uid, patient, timepoint in (("CNO-0002", "1.2.3", "P-001", 2), ("CNO-0001", "1.2.4", "P-001", 1),
                                              ("CNO-0003", "1.2.5", "P-002", 1)):
            table.add_case(db, Case("t", code, uid, patient, timepoint))
        table.add_reader(db, "t", "dr-a", "reader")
        table.set_reader(db, "t", "dr-a", "adjudicator")  # a second registration changes the role
        table.replace_worklists(db, "t", {"dr-a": ["CNO-0003", "CNO-0001"]})
    assert table.study(store.db, "t") == settings and table.study(store.db, "other") is None
    assert [c.reading_code for c in table.cases(store.db, "t")] == ["CNO-0001", "CNO-0002", "CNO-0003"]
    assert table.case(store.db, "t", "CNO-0002") == Case("t", "CNO-0002", "1.2.3", "P-001", 2)
    assert [c.timepoint for c in table.patient_cases(store.db, "t", "P-001")] == [1, 2]
    assert table.readers(store.db, "t") == [Registration("dr-a", "adjudicator")]
    assert table.worklist(store.db, "t", "dr-a") == [WorklistEntry(1, "CNO-0003", "1.2.5"),
                                                     WorklistEntry(2, "CNO-0001", "1.2.4")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.cases(store.db, "t")[0].timepoint = 3  # type: ignore[misc]


def test_a_derived_volume_is_read_back_as_it_was_written(store):
    volume = derived.DerivedVolume(
        volume_id="1.2.3.9-comp", study_uid="1.2.3", kind="composed", series_uid=None, auto_role="STIR",
        role_reason="composed from 2 STIR stations (COR)", sequence="STIR", orientation="COR", shape=[4, 5, 6],
        affine=[[1.5, 0, 0, -10.25], [0, 1.5, 0, 3.0], [0, 0, 4.0, 7.5], [0, 0, 0, 1]], stations=2,
        members=["a", "b"], gaps=[{"member": "a", "after": 3, "missing": 1}], duplicates=0, description="STIR",
        source_path=None, fingerprint="f" * 40, patient_geometry=True, variant="", composition={"composed": None})
    note = derived.CompositionNote("1.2.3", "STIR", "COR", "stir", volume.volume_id, "composed", {"stations": ["a"]})
    with store.transaction() as db:
        derived.replace_derived(db, "1.2.3", [volume], [note])
    row = store.volume(volume.volume_id)
    assert {f.name: getattr(row, f.name) for f in dataclasses.fields(volume)} == dataclasses.asdict(volume)
    assert store.compositions("1.2.3") == [note]


def test_clinical_visits_come_back_typed_and_as_the_document_dictionaries(tmp_path):
    visit = Visit("REC-1", "2026-03-02", "F", 8.5, 9.0, 12.0, None,
                  (PainfulSite("femur.distal", "R"), PainfulSite("T8", None)),
                  (Treatment("nsaid", "2026-01-10", None),))
    db = CoordinatorDB.open(tmp_path / "key.sqlite")
    clinical.put_visits(db.db, [visit])
    assert db.visits("REC-1") == [visit]
    assert [v.as_dict() for v in db.visits("REC-1")] == [{
        "record_id": "REC-1", "visit_date": "2026-03-02", "sex": "F", "age_at_onset": 8.5, "age_at_diagnosis": 9.0,
        "crp_mg_l": 12.0, "esr_mm_h": None,
        "painful_sites": [{"site_id": "femur.distal", "side": "R"}, {"site_id": "T8", "side": None}],
        "treatments": [{"treatment": "nsaid", "start": "2026-01-10", "stop": None}]}]


def test_a_studys_files_come_back_in_series_and_instance_order(store, small_study):
    """The reading package copies a study's files by this listing (it failed on PostgreSQL: DISTINCT + ORDER BY)."""
    from cno_annotate.importer import import_paths
    from cno_annotate.store import catalog

    import_paths(store, [small_study])
    (study_uid,) = {s.study_uid for s in store.studies()}
    files = catalog.files_of_study(store.db, study_uid)
    assert len(files) == len({f.path for f in files}) == len(store.db.execute("SELECT path FROM images").fetchall())
    keys = [(f.series_number, f.series_uid) for f in files]
    assert keys == sorted(keys)

"""The importer's SQL (store/instances.py) on both backends: what is written is read back, typed."""

from __future__ import annotations

import dataclasses

import pytest

from cno_annotate.store import instances

STORE_BACKENDS = ("sqlite", "postgresql")
AFFINE = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


def place(series_uid: str = "1.2.3.1", study_uid: str = "1.2.3", patient_id: str = "P1") -> instances.SeriesPlace:
    return instances.SeriesPlace(
        patient_id=patient_id, patient_name="Doe^Jane", birth_date="20150102", sex="F", study_uid=study_uid,
        study_date="20260101", study_description="WB MRI", accession="A1", institution="Somewhere",
        series_uid=series_uid, modality="MR", series_number=3, attributes={"RepetitionTime": 520.0},
    )


def image(sop_uid: str, frame: int = 0, series_uid: str = "1.2.3.1", path: str = "/data/a.dcm") -> instances.ImageRow:
    return instances.ImageRow(
        sop_uid, frame, series_uid, path, "1.2.840.10008.1.2.1", 1234, 1, "<u2", "MONOCHROME2", 12, 4, 4,
        (0.0, 1.0, 2.0), (1.0, 0.0, 0.0, 0.0, 0.0, -1.0), (0.5, 0.5), 5.0, (1.0, 0.0), 11.0, 7, True,
        {"echo_time": 11.0},
    )


def nifti(volume_id: str = "2.25.7", path: str = "/d/t.nii", study_description: str = "NIfTI files in d"):
    return instances.NiftiVolume(volume_id, "2.25.8", study_description, "other", "name only", "axial", (2, 3, 4),
                                 AFFINE, "t.nii", path, "ab")


def test_series_and_images_written_are_read_back_as_typed_rows(store):
    with store.transaction() as db:
        instances.add_series(db, place())
        instances.add_series(db, place())  # again: nothing doubles
        instances.add_series(db, place("1.2.4.1", "1.2.4"))  # the same patient's second study
        instances.add_images(db, [image("1.9.1"), image("1.9.1", frame=1), image("1.9.2", path="/data/b.dcm"),
                                  image("1.9.3", series_uid="1.2.4.1", path="/data/c.dcm")])
        instances.add_images(db, [image("1.9.1", path="/elsewhere/a.dcm")])  # an image the store holds is kept
    known = sorted(instances.known_instances(store.db), key=lambda i: i.sop_uid)
    assert known == [instances.KnownInstance("1.9.1", "/data/a.dcm", "1.2.3.1", "1.2.3"),
                     instances.KnownInstance("1.9.2", "/data/b.dcm", "1.2.3.1", "1.2.3"),
                     instances.KnownInstance("1.9.3", "/data/c.dcm", "1.2.4.1", "1.2.4")]
    owners = sorted(instances.study_owners(store.db), key=lambda o: o.study_uid)
    assert owners == [instances.StudyOwner("1.2.3", "P1", "Doe^Jane", "20150102"),
                      instances.StudyOwner("1.2.4", "P1", "Doe^Jane", "20150102")]
    assert store.db.execute("SELECT COUNT(*) FROM patients").fetchone()[0] == 1
    assert sorted(instances.series_studies(store.db), key=lambda s: s.series_uid) == [
        instances.SeriesStudy("1.2.3.1", "1.2.3"), instances.SeriesStudy("1.2.4.1", "1.2.4")]
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        known[0].path = "/elsewhere"  # type: ignore[misc]


def test_images_keep_every_field_and_paths_that_are_not_utf8(store):
    odd = "/data/caf\udce9.dcm"  # a Latin-1 byte in a file name, as os.fsdecode gives it
    with store.transaction() as db:
        instances.add_series(db, place())
        instances.add_images(db, [image("1.9.1", path=odd)])
    row = store.db.execute("SELECT * FROM images").fetchone()
    assert [row[k] for k in ("sop_uid", "frame", "series_uid", "transfer_syntax", "pixel_offset", "frames", "dtype",
                             "photometric", "bits_stored", "rows", "columns", "position", "orientation",
                             "pixel_spacing", "slice_thickness", "rescale", "echo_time", "instance_number",
                             "geometry_known", "split_values")] == [
        "1.9.1", 0, "1.2.3.1", "1.2.840.10008.1.2.1", 1234, 1, "<u2", "MONOCHROME2", 12, 4, 4, "[0.0, 1.0, 2.0]",
        "[1.0, 0.0, 0.0, 0.0, 0.0, -1.0]", "[0.5, 0.5]", 5.0, "[1.0, 0.0]", 11.0, 7, 1, '{"echo_time": 11.0}']
    assert row["path"].isascii()  # kept in the store's text form
    assert instances.known_instances(store.db)[0].path == row["path"]


def test_file_states_are_replaced_per_path(store):
    with store.transaction() as db:
        instances.record_file_states(db, [instances.FileState("/data/a.dcm", 10, 20, "dicom", "1.9.1", None),
                                          instances.FileState("/data/n.txt", 3, 4, "skipped", None, "not DICOM")])
    with store.transaction() as db:
        instances.record_file_states(db, [instances.FileState("/data/n.txt", 5, 6, "skipped", None, "still not")])
    assert sorted(instances.file_states(store.db), key=lambda f: f.path) == [
        instances.FileState("/data/a.dcm", 10, 20, "dicom", "1.9.1", None),
        instances.FileState("/data/n.txt", 5, 6, "skipped", None, "still not"),
    ]


def test_import_runs_record_their_skipped_files_and_summary(store):
    with store.transaction() as db:
        first = instances.start_import_run(db, "2026-11-28T19:00:00+00:00", ["/data"])
        second = instances.start_import_run(db, "2026-11-28T19:01:00+00:00", ["/other"])
    assert first > 0 and second > first
    with store.transaction() as db:
        instances.finish_import_run(db, first, "2026-11-28T19:00:05+00:00", {"instances": 0},
                                    [("/data/x", "not a DICOM file")])
    runs = {r["run_id"]: r for r in store.import_runs()}
    assert runs[first]["summary"] == {"instances": 0} and runs[first]["paths"] == ["/data"]
    assert runs[first]["skipped"] == [{"path": "/data/x", "reason": "not a DICOM file"}]
    assert runs[second]["finished"] is None and runs[second]["skipped"] == []


def test_nifti_volumes_are_recorded_in_their_folders_study_and_replaced(store):
    with store.transaction() as db:
        instances.add_nifti_volume(db, nifti())
        instances.add_nifti_volume(db, nifti("2.25.9", "/d/u.nii", "NIfTI files in another name"))
    with store.transaction() as db:
        instances.add_nifti_volume(db, nifti(path="/moved/t.nii"))  # the same content found elsewhere
    assert sorted(instances.nifti_sources(store.db), key=lambda n: n.volume_id) == [
        instances.NiftiSource("2.25.7", "/moved/t.nii", "2.25.8"), instances.NiftiSource("2.25.9", "/d/u.nii", "2.25.8")]
    assert instances.nifti_source(store.db, "2.25.7") == instances.NiftiSource("2.25.7", "/moved/t.nii", "2.25.8")
    assert instances.nifti_source(store.db, "2.25.10") is None
    study = store.db.execute("SELECT * FROM studies").fetchall()
    assert [(s["study_uid"], s["patient_key"], s["description"]) for s in study] == [
        ("2.25.8", None, "NIfTI files in d")]
    volume = store.db.execute("SELECT * FROM volumes WHERE volume_id = '2.25.7'").fetchone()
    assert (volume["kind"], volume["auto_role"], volume["role_reason"], volume["shape"], volume["stations"],
            volume["description"], volume["fingerprint"], volume["patient_geometry"]) == (
        "nifti", "other", "name only", "[2, 3, 4]", 1, "t.nii", "ab", 1)

"""Import never merges patients, never stops on one bad file, never explodes (issue 9, items 4-8)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths, rebuild_volumes
from cno_annotate.io import dicom_index
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stress"))
from dicom_mutations import TARGETS, set_value, walk  # noqa: E402

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
RLE_MR = PYDICOM_FILES / "MR_small_RLE.dcm"


def _with(data: bytes, **values: bytes | None) -> bytes:
    """A file's bytes with attributes set to raw values (None deletes), bypassing pydicom's checks."""
    for name, value in values.items():
        tag, vr = TARGETS[name]
        elements = walk(data)
        if value is None:
            element = next(e for e in elements if e.tag == tag)
            data = data[:element.start] + data[element.end:]
        else:
            data = set_value(data, elements, tag, vr, value)
    return data


def _series_files(small_study: Path) -> list[Path]:
    """The six files of the small study's first station."""
    series = sorted(p for p in (small_study / "DICOM").glob("*/*/*") if p.is_dir())[0]
    return sorted(series.iterdir())


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _reasons(report) -> dict[str, str]:
    return {Path(s["path"]).name: s["reason"] for s in report.skipped}


# -- item 4: different patients are never merged ---------------------------------------------


def test_files_without_uids_of_two_patients_get_separate_studies_and_series(small_study, tmp_path, store):
    files = _series_files(small_study)
    folder = tmp_path / "no-uids"
    for n, source in enumerate(files[:4]):
        who = (b"PAT-A", b"Alpha^Ann") if n % 2 == 0 else (b"PAT-B", b"Beta^Bob")
        data = _with(source.read_bytes(), StudyInstanceUID=None, SeriesInstanceUID=None,
                     PatientID=who[0], PatientName=who[1])
        _write(folder, f"F{n}", data)
    report = import_paths(store, [folder])
    assert report.new_instances == 4 and report.skipped == []
    patients = {}
    for series_uid, study_uid, patient in store.db.execute(
        "SELECT DISTINCT i.series_uid, s.study_uid, p.patient_id FROM images i "
        "JOIN dicom_series d USING (series_uid) JOIN studies s USING (study_uid) JOIN patients p USING (patient_key)"
    ):
        patients.setdefault(series_uid, set()).add(patient)
        assert series_uid not in ("unknown-series", "") and study_uid not in ("unknown-study", "")
    assert sorted(len(p) for p in patients.values()) == [1, 1]
    assert {next(iter(p)) for p in patients.values()} == {"PAT-A", "PAT-B"}
    for series_uid in patients:  # every image of a series is in it, and per-patient keys are stable
        paths = [i.path for i in store.images(series_uid)]
        assert len(paths) == 2
    again = import_paths(store, [folder])
    assert again.already_imported == 4 and again.new_instances == 0


def test_a_file_of_another_patient_with_the_same_uids_is_refused_with_a_reason(small_study, tmp_path, store):
    files = _series_files(small_study)
    folder = tmp_path / "shared-uids"
    folder.mkdir()
    for source in files[:3]:
        shutil.copyfile(source, folder / source.name)
    intruder = _with(files[3].read_bytes(), PatientID=b"OTHER-1", PatientName=b"Other^Child")
    _write(folder, "ZZ-OTHER", intruder)
    report = import_paths(store, [folder])
    reasons = _reasons(report)
    assert list(reasons) == ["ZZ-OTHER"]
    assert "another patient" in reasons["ZZ-OTHER"]
    assert store.db.execute("SELECT COUNT(*) FROM patients").fetchone()[0] == 1
    # the same in two runs: what is stored already counts
    later = tmp_path / "later"
    _write(later, "OTHER", _with(files[4].read_bytes(), PatientID=b"OTHER-1", PatientName=b"Other^Child"))
    assert "another patient" in _reasons(import_paths(store, [later]))["OTHER"]
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 3


# -- item 5: one bad file never stops the import or poisons the study ------------------------


def test_a_flipped_vr_byte_skips_that_file_only(small_study, tmp_path, store):
    files = _series_files(small_study)
    folder = tmp_path / "flipped"
    shutil.copytree(files[0].parent, folder)
    victim = folder / files[2].name
    data = victim.read_bytes()
    element = next(e for e in walk(data) if e.tag == 0x00180080)  # RepetitionTime DS -> FL
    victim.write_bytes(data[:element.start + 4] + b"FL" + data[element.start + 6:])
    report = import_paths(store, [folder])
    assert list(_reasons(report)) == [victim.name]
    assert "RepetitionTime" in _reasons(report)[victim.name] or "(0018,0080)" in _reasons(report)[victim.name]
    assert report.new_instances == len(files) - 1


@pytest.mark.parametrize("frames", [b"-1", b"abc", b"nan", b"0"])
def test_a_bad_number_of_frames_is_refused_with_a_reason(small_study, tmp_path, store, frames):
    files = _series_files(small_study)
    folder = tmp_path / "frames"
    _write(folder, "BAD", _with(files[0].read_bytes(), NumberOfFrames=frames))
    _write(folder, "GOOD", files[1].read_bytes())
    report = import_paths(store, [folder])
    assert "NumberOfFrames" in _reasons(report)["BAD"]
    assert report.new_instances == 1


def test_nan_spacing_between_slices_is_refused_and_later_imports_still_work(small_study, tmp_path, store):
    files = _series_files(small_study)
    folder = tmp_path / "nan"
    # Without patient geometry, SpacingBetweenSlices places the slices.
    for n, source in enumerate(files[:3]):
        data = _with(source.read_bytes(), ImagePositionPatient=None, ImageOrientationPatient=None)
        if n == 1:
            data = _with(data, SpacingBetweenSlices=b"NaN")
        _write(folder, f"F{n}", data)
    report = import_paths(store, [folder])
    assert "SpacingBetweenSlices" in _reasons(report)["F1"]
    for row in store.volumes():
        assert np.isfinite(load_volume(store, row.volume_id).affine).all()
    assert import_paths(store, [small_study]).new_instances > 0


def test_a_store_poisoned_before_this_fix_does_not_stop_later_imports(small_study, tmp_path, store):
    files = _series_files(small_study)
    import_paths(store, [files[0].parent])
    series_uid = store.db.execute("SELECT series_uid FROM images LIMIT 1").fetchone()[0]
    with store.transaction() as db:  # a row as the old importer committed it
        db.execute("UPDATE images SET position = ? WHERE rowid = (SELECT MIN(rowid) FROM images)",
                   (json.dumps([float("nan")] * 3),))
    study_uid = store.db.execute("SELECT study_uid FROM dicom_series WHERE series_uid = ?",
                                 (series_uid,)).fetchone()[0]
    rebuild_volumes(store, [study_uid])  # must not raise
    for row in store.volumes():
        try:
            volume = load_volume(store, row.volume_id)
        except CnoError:
            continue
        assert np.isfinite(volume.affine).all()


# -- item 6: declared sizes are checked before anything is allocated -------------------------


@pytest.mark.parametrize("values", [
    {"Rows": b"\xff\xff", "Columns": b"\xff\xff"},
    {"NumberOfFrames": b"3000000"},
])
def test_compressed_files_claiming_huge_sizes_are_refused_before_decoding(tmp_path, store, values):
    path = _write(tmp_path / "huge", "HUGE", _with(RLE_MR.read_bytes(), **values))
    report = import_paths(store, [path])
    reason = _reasons(report)["HUGE"]
    assert "declares" in reason, reason
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0


def test_the_size_limit_is_configurable(small_study, tmp_path, store, monkeypatch):
    files = _series_files(small_study)
    monkeypatch.setattr(dicom_index, "MAX_DECODED_BYTES", 48 * 48 * 2 - 1)
    report = import_paths(store, [files[0]])
    assert "limit" in _reasons(report)[files[0].name]
    monkeypatch.setattr(dicom_index, "MAX_DECODED_BYTES", 48 * 48 * 2)
    assert import_paths(Store.open(tmp_path / "other"), [files[0]]).new_instances == 1


# -- item 7: a decoder panic becomes the series' error message -------------------------------


@pytest.fixture
def panicking_rle(tmp_path, store):
    """An RLE file whose Rows no longer match its segments: pylibjpeg-rle panics when decoding it."""
    path = _write(tmp_path / "panic", "PANIC", _with(RLE_MR.read_bytes(), Rows=b"\x20\x00"))
    import_paths(store, [path])
    (row,) = store.volumes()
    return row.volume_id


def test_a_decoder_panic_is_a_load_error_with_a_message(store, panicking_rle):
    with pytest.raises(CnoError, match="no slice of .* could be read: .*PANIC.*decoder"):
        load_volume(store, panicking_rle)


def test_export_nifti_of_a_panicking_file_says_why_in_one_line(store, panicking_rle, cli, tmp_path):
    code, out, err = cli("export-nifti", panicking_rle, "--out", tmp_path / "x.nii", "--store", store.root)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "decoder" in err and "Traceback" not in err


def test_the_viewer_loader_reports_a_decoder_panic(qtbot, store, panicking_rle):
    from cno_annotate_ui.loader import VolumeLoader

    loader = VolumeLoader(store.root)
    with qtbot.waitSignal(loader.failed, timeout=20000) as blocker:
        loader.load("left", panicking_rle)
    view, message = blocker.args
    assert view == "left" and "decoder" in message


def test_the_viewer_loader_survives_a_panic_from_anywhere(qtbot, store, panicking_rle, monkeypatch):
    """A panic outside the pixel reader (a future decoder) must not leave the view loading forever."""
    import cno_annotate_ui.loader as loader_module

    import cno_annotate.volumes

    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    def panicking(*_args, **_kwargs):
        raise panic("index out of bounds")

    monkeypatch.setattr(cno_annotate.volumes, "load_volume", panicking)
    loader = loader_module.VolumeLoader(store.root)
    with qtbot.waitSignal(loader.failed, timeout=20000) as blocker:
        loader.load("left", panicking_rle)
    assert "decoder crashed" in blocker.args[1]


def test_keyboard_interrupt_is_not_swallowed_by_the_decoder_guard(store, panicking_rle, monkeypatch):
    from cno_annotate.io import pixels

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pixels, "_decode_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_volume(store, panicking_rle)


# -- item 8: rescale and geometry values that make garbage are refused at indexing -----------


@pytest.mark.parametrize("name,value", [
    ("RescaleSlope", b"NaN"), ("RescaleSlope", b"inf"), ("RescaleSlope", b"1e308"), ("RescaleSlope", b"0"),
    ("RescaleIntercept", b"-inf"), ("RescaleIntercept", b"1e308"), ("RescaleIntercept", b"NaN"),
    ("PixelSpacing", b"1e308\\1e308"), ("PixelSpacing", b"1e-300\\1e-300"), ("PixelSpacing", b"NaN\\1"),
    ("SliceThickness", b"inf"), ("SliceThickness", b"NaN"), ("SliceThickness", b"-3"),
    ("ImagePositionPatient", b"1e308\\0\\0"),
    ("Rows", b"\x00\x00"), ("Columns", b"\x00\x00"),
])
def test_values_that_would_make_garbage_voxels_or_geometry_are_refused(small_study, tmp_path, store, name, value):
    files = _series_files(small_study)
    folder = tmp_path / "values"
    _write(folder, "BAD", _with(files[0].read_bytes(), **{name: value}))
    for source in files[1:3]:
        _write(folder, source.name, source.read_bytes())
    report = import_paths(store, [folder])
    assert name in _reasons(report).get("BAD", ""), _reasons(report)
    assert report.new_instances == 2
    for row in store.volumes():
        volume = load_volume(store, row.volume_id)
        assert volume.array.size > 0 and np.isfinite(volume.array).all() and np.isfinite(volume.affine).all()

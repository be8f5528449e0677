"""A corpus of bad files: every one reported with a reason, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ComprehensiveSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    generate_uid,
)

from cno_annotate.importer import import_paths
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume


def _non_image(path: Path, sop_class: str) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "SR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _variant(source: Path, target: Path, change) -> None:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    change(ds)
    ds.save_as(target, enforce_file_format=False)


def _as_mpeg2(ds: Dataset) -> None:
    """Pretend the pixels are MPEG-2 video, which no decoder here reads."""
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([ds.PixelData])


def _deflated(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian


@pytest.fixture
def bad_corpus(small_study, tmp_path) -> tuple[Path, dict[str, str]]:
    """Bad files in CD-export style (no extensions) and the reason each must get."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = next(p for p in sorted((small_study / "DICOM").rglob("*")) if p.is_file())
    raw = good.read_bytes()
    rng = np.random.default_rng(0)
    (folder / "EMPTY").write_bytes(b"")
    (folder / "TRUNC").write_bytes(raw[: len(raw) // 2])
    (folder / "HEADCUT").write_bytes(raw[:300])
    (folder / "RANDOM").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "NOTES").write_text("scanned on the old machine\n")
    _non_image(folder / "SR", ComprehensiveSRStorage)
    _non_image(folder / "PR", GrayscaleSoftcopyPresentationStateStorage)
    _non_image(folder / "KO", KeyObjectSelectionDocumentStorage)
    _variant(good, folder / "NOPIXELS", lambda ds: delattr(ds, "PixelData"))
    _variant(good, folder / "BADSYNTAX", _as_mpeg2)
    _variant(good, folder / "DEFLATED", _deflated)  # a good one, to cut:
    deflated = (folder / "DEFLATED").read_bytes()
    (folder / "DEFLATED").unlink()
    (folder / "DEFLATECUT").write_bytes(deflated[: len(deflated) * 2 // 3])
    _variant(good, folder / "DEFLATENOPIXELS", lambda ds: (_deflated(ds), delattr(ds, "PixelData")))
    _variant(good, folder / "SKEWED", lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0.5, 0, -1]))
    _variant(good, folder / "NOSPACING", lambda ds: delattr(ds, "PixelSpacing"))
    _variant(good, folder / "ZEROSPACING", lambda ds: setattr(ds, "PixelSpacing", [0, 0]))
    expected = {
        "EMPTY": "empty file",
        "TRUNC": "truncated pixel data",
        "HEADCUT": "incomplete image header: MR Image Storage without Rows",
        "RANDOM": "not a DICOM file",
        "NOTES": "not a DICOM file",
        "SR": "not an image (Comprehensive SR Storage)",
        "PR": "not an image (Grayscale Softcopy Presentation State Storage)",
        "KO": "not an image (Key Object Selection Document Storage)",
        "NOPIXELS": "no pixel data",
        "BADSYNTAX": "unsupported transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)",
        "DEFLATECUT": "damaged deflated data",
        "DEFLATENOPIXELS": "no pixel data",
        "SKEWED": "not orthonormal",
        "NOSPACING": "incomplete geometry",
        "ZEROSPACING": "inconsistent geometry: PixelSpacing",
    }
    return folder, expected


def test_bad_files_are_reported_and_nothing_stored_is_lost(bad_corpus, small_study, store):
    import_paths(store, [small_study])
    before_images = store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    before_volumes = store.volumes()
    folder, expected = bad_corpus
    report = import_paths(store, [folder, folder / "NOT-THERE"])
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert reasons.pop("NOT-THERE") == "no such file or folder"
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons[name])
    assert report.instances == 0
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == before_images
    assert store.volumes() == before_volumes
    for volume in before_volumes:  # and every volume still loads
        assert load_volume(store, volume.volume_id).load.errors == []


def test_skipped_files_are_kept_in_the_import_log(bad_corpus, store, cli):
    folder, expected = bad_corpus
    code, out, err = cli("import", folder, "--store", store.root, "--json")
    assert code == 1 and err.count("\n") == 1 and "nothing imported" in err  # no file of the corpus is usable
    summary = json.loads(out)
    assert {"studies", "series", "instances", "skipped"} <= set(summary)
    assert len(summary["skipped"]) == len(expected)
    assert all(set(s) == {"path", "reason"} for s in summary["skipped"])
    code, out, _ = cli("import-log", "--store", store.root, "--json")
    (run,) = json.loads(out)
    assert sorted(s["path"] for s in run["skipped"]) == sorted(s["path"] for s in summary["skipped"])


def test_a_file_deleted_after_import_is_reported_at_load(small_study, copy_tree, store):
    study = copy_tree(small_study)
    import_paths(store, [study])
    station = next(v for v in store.volumes() if v.kind == "stack")
    victim = store.images(station.series_uid)[0].path
    Path(victim).unlink()
    volume = load_volume(store, station.volume_id)
    assert [e["path"] for e in volume.load.errors] == [victim]
    assert np.count_nonzero(volume.array.reshape(volume.shape[0], -1).any(axis=1)) == volume.shape[0] - 1


def test_parallel_header_indexing_gives_the_serial_result(small_study, bad_corpus, tmp_path):
    """Large imports index in worker processes; the store must come out the same, bad files included."""
    import json as _json
    import subprocess
    import sys

    folder, expected = bad_corpus
    script = (
        "import sys, json; from pathlib import Path\n"
        "import cno_annotate.importer as importer\n"
        "from cno_annotate.store import Store\n"
        "importer.PARALLEL_FROM = 1\n"
        "report = importer.import_paths(Store.open(sys.argv[1]), [Path(p) for p in sys.argv[2:]])\n"
        "print(json.dumps({'skipped': report.skipped, 'instances': report.instances}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "parallel"), str(small_study), str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    parallel_report = _json.loads(result.stdout)
    serial_store = Store.open(tmp_path / "serial")
    serial = import_paths(serial_store, [small_study, folder])
    assert parallel_report == {"skipped": serial.skipped, "instances": serial.instances}
    parallel_store = Store.open(tmp_path / "parallel")
    images = "SELECT sop_uid, frame, series_uid, position, pixel_offset FROM images ORDER BY sop_uid, frame"
    assert parallel_store.db.execute(images).fetchall() == serial_store.db.execute(images).fetchall()
    assert parallel_store.volumes() == serial_store.volumes()
    assert len(serial.skipped) == len(expected)  # the study's ground_truth.json is ignored, not listed

"""NIfTI files whose header declares more voxels than the file holds, or more than the size limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.io import pixels
from cno_annotate.io.nifti import write_nifti
from cno_annotate.io.volume import Volume
from cno_annotate.volumes import load_volume


def _reasons(report) -> dict[str, str]:
    return {Path(s["path"]).name: s["reason"] for s in report.skipped}


def _huge_header_file(path: Path) -> Path:
    """A 452-byte .nii whose header claims 30000 x 30000 x 30000 float32 voxels."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 100)
    return path


def _small_volume(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.arange(8 * 16 * 16, dtype=np.float32).reshape(8, 16, 16)
    return write_nifti(Volume(array=array, affine=np.diag([1.0, 1.0, 2.0, 1.0])), path)


def test_a_nii_declaring_more_voxels_than_it_holds_is_refused_at_import(tmp_path, store):
    path = _huge_header_file(tmp_path / "in" / "huge.nii")
    assert path.stat().st_size == 452
    report = import_paths(store, [path])
    reason = _reasons(report)["huge.nii"]
    assert "declares" in reason and "MemoryError" not in reason, reason
    assert store.volumes() == []


def test_a_cut_off_nii_is_refused_at_import(tmp_path, store):
    path = _small_volume(tmp_path / "in" / "cut.nii")
    path.write_bytes(path.read_bytes()[:-100])
    reason = _reasons(import_paths(store, [path]))["cut.nii"]
    assert "truncated" in reason, reason
    assert store.volumes() == []


def test_a_nii_gz_above_the_size_limit_is_refused_at_import(tmp_path, store, monkeypatch):
    path = _small_volume(tmp_path / "in" / "big.nii.gz")
    monkeypatch.setattr(pixels, "MAX_VOLUME_BYTES", 8 * 16 * 16 * 4 - 1)
    reason = _reasons(import_paths(store, [path]))["big.nii.gz"]
    assert "limit" in reason and "CNO_ANNOTATE_MAX_VOLUME_MB" in reason, reason
    monkeypatch.setattr(pixels, "MAX_VOLUME_BYTES", 8 * 16 * 16 * 4)
    assert import_paths(store, [path]).skipped == []


def _imported(store, path: Path) -> str:
    import_paths(store, [path])
    (row,) = store.volumes()
    return row.volume_id


def test_a_half_gzip_nii_gz_is_a_one_line_error_at_load(tmp_path, store, cli):
    path = _small_volume(tmp_path / "in" / "trunc.nii.gz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    volume_id = _imported(store, path)
    with pytest.raises(CnoError, match="trunc.nii.gz.*(truncated|incomplete)"):
        load_volume(store, volume_id)
    code, out, err = cli("export-nifti", volume_id, "--out", tmp_path / "x.nii", "--store", store.root)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err and "EOFError" not in err, err


def test_a_nii_replaced_by_a_huge_header_after_import_is_a_one_line_error(tmp_path, store, cli):
    path = _small_volume(tmp_path / "in" / "later.nii")
    volume_id = _imported(store, path)
    _huge_header_file(path)
    with pytest.raises(CnoError, match="declares"):
        load_volume(store, volume_id)
    code, out, err = cli("export-nifti", volume_id, "--out", tmp_path / "x.nii", "--store", store.root)
    assert code == 1 and err.count("\n") == 1 and "MemoryError" not in err, err


def test_a_nii_gz_above_the_limit_after_import_is_a_one_line_error(tmp_path, store, monkeypatch):
    volume_id = _imported(store, _small_volume(tmp_path / "in" / "grown.nii.gz"))
    monkeypatch.setattr(pixels, "MAX_VOLUME_BYTES", 100)
    with pytest.raises(CnoError, match="limit"):
        load_volume(store, volume_id)


def test_a_moved_nifti_folder_stays_in_its_study_with_its_reads(tmp_path, store):
    """Moving a folder of NIfTI files and importing it again re-links them in the study they were read in."""
    from cno_annotate.annotation.reads import ReadSession

    first = _small_volume(tmp_path / "visit" / "stir.nii")
    _small_volume(tmp_path / "visit" / "t1.nii").write_bytes(first.read_bytes()[:-4] + b"\1\0\0\0")
    import_paths(store, [first.parent])
    (study,) = store.studies()
    session = ReadSession.open_or_create(store, study.study_uid, "dr-a")
    session.add_lesion((0.0, 0.0, 0.0), store.volumes()[0].volume_id, (1, 1, 1), site_id="femur.distal", side="R")
    (tmp_path / "visit").rename(tmp_path / "moved")

    report = import_paths(store, [tmp_path / "moved"])

    assert report.relinked == 2
    assert [s.study_uid for s in store.studies()] == [study.study_uid]
    assert len(store.volumes()) == 2
    assert all(str(tmp_path / "moved") in v.source_path for v in store.volumes())
    assert ReadSession.open_or_create(store, study.study_uid, "dr-a").read.lesions

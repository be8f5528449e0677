"""A new user's import trial (issue 11): DICOMDIR paths, empty imports, known non-image files, honest reasons."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from cno_annotate.importer import import_paths
from cno_annotate.store import Store


@pytest.fixture(scope="module")
def cd_with_dicomdir(small_study, tmp_path_factory) -> Path:
    """The small study written as a DICOM file-set (DICOMDIR plus PT*/ST*/SE*/IM* files), as CDs hold it."""
    out = tmp_path_factory.mktemp("cd") / "cdrom"
    fileset = FileSet()
    for path in sorted(small_study.rglob("IM*")):
        fileset.add(pydicom.dcmread(path))
    fileset.write(out)
    return out


def _n_images(small_study: Path) -> int:
    return len(list(small_study.rglob("IM*")))


# -- 6: a DICOMDIR path, an empty import, known non-image files --------------------------------
def test_importing_a_dicomdir_file_imports_the_folder_it_sits_in(cd_with_dicomdir, small_study, tmp_path, cli):
    code, out, err = cli("import", cd_with_dicomdir / "DICOMDIR", "--store", tmp_path / "s")
    assert code == 0, err
    assert f"imported {_n_images(small_study)} instances" in out, out
    assert "skipped" not in out, out


def test_an_import_of_no_image_exits_non_zero_with_one_line(tmp_path, cli):
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    code, out, err = cli("import", folder, "--store", tmp_path / "s")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "nothing imported" in err, err
    code, out, err = cli("import", tmp_path / "empty-folder-that-is-made", "--store", tmp_path / "s")
    assert code == 1


def test_dicomdir_and_the_samples_ground_truth_are_not_listed_as_skipped(cd_with_dicomdir, small_study, tmp_path,
                                                                        cli):
    shutil.copytree(cd_with_dicomdir, tmp_path / "cd")
    shutil.copy(small_study / "ground_truth.json", tmp_path / "cd")
    for _ in range(2):
        code, out, err = cli("import", tmp_path / "cd", "--store", tmp_path / "s")
        assert code == 0, err
        assert "skipped" not in out, out
        assert "ignored 2 known non-image files (DICOMDIR, ground_truth.json)" in out, out


# -- 7: messages that name the real problem ----------------------------------------------------
def test_a_lying_patient_name_length_is_named(small_study, tmp_path, store):
    source = sorted(small_study.rglob("IM*"))[0]
    data = bytearray(source.read_bytes())
    at = data.find(b"\x10\x00\x10\x00PN")  # (0010,0010) PatientName, explicit VR little endian
    assert at > 0
    data[at + 6:at + 8] = (len(data) - at - 8).to_bytes(2, "little") if len(data) - at - 8 < 65536 else b"\xff\xfe"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "IM1").write_bytes(bytes(data))
    report = import_paths(store, [tmp_path / "in"])
    (skipped,) = report.skipped
    assert "Rows / Columns" not in skipped["reason"]
    assert "PatientName" in skipped["reason"] and "length" in skipped["reason"], skipped


def test_a_cifti_file_is_named_as_such(tmp_path, store):
    nib = pytest.importorskip("nibabel")
    from nibabel import cifti2

    scalars = cifti2.ScalarAxis(["thickness"])
    brain = cifti2.BrainModelAxis.from_mask(np.ones((2, 2, 2), bool), affine=np.eye(4))
    image = cifti2.Cifti2Image(np.zeros((1, 8), np.float32), cifti2.Cifti2Header.from_axes((scalars, brain)))
    image.nifti_header.set_intent("ConnDenseScalar")
    (tmp_path / "in").mkdir()
    nib.save(image, tmp_path / "in" / "x.dscalar.nii")
    report = import_paths(store, [tmp_path / "in"])
    (skipped,) = report.skipped
    assert "Cifti2Image" not in skipped["reason"] and "CIFTI" in skipped["reason"], skipped


def test_the_second_of_two_racing_imports_reports_already_in_store(small_study, tmp_path):
    first = Store.open(tmp_path / "s")
    second = Store.open(tmp_path / "s")
    raced = []

    def other_import_meanwhile(done: int, total: int) -> None:
        if not raced:
            raced.append(import_paths(second, [small_study]))

    report = import_paths(first, [small_study], progress=other_import_meanwhile)
    assert raced[0].new_instances == _n_images(small_study)
    assert report.new_instances == 0 and report.already_imported == _n_images(small_study)

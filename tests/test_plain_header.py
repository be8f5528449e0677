"""The plain header reader gives exactly what the pydicom path gives, on every file it takes.

Most files of an import are read without pydicom (io/dicom_header.py); anything that reader
does not handle goes to pydicom. These tests index the whole third-party corpus the other tests
use, plus variants written here, both ways and compare every record and every reason.
"""

from __future__ import annotations

import copy
import gzip
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, private_dictionary_VR, tag_for_keyword

import cno_annotate.io.dicom_index as dicom_index
from cno_annotate.io.dicom_header import ATTRIBUTES, PRIVATE_ATTRIBUTES, read_plain_header

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
NICOM_DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


def corpus(tmp_path: Path, small_study: Path) -> list[Path]:
    """pydicom's and nibabel's test files, the sample study, and MR_small variants written here."""
    files = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())
    for gz in sorted(NICOM_DATA.glob("*.dcm.gz")):
        target = tmp_path / gz.name[:-3]
        target.write_bytes(gzip.decompress(gz.read_bytes()))
        files.append(target)
    files += sorted(p for p in NICOM_DATA.rglob("*") if p.is_file() and not p.name.endswith(".gz"))
    files += sorted(p for p in small_study.rglob("*") if p.is_file())
    return files + variants(tmp_path / "variants")


def variants(folder: Path) -> list[Path]:
    """MR_small re-written with values that test the conversions at their edges."""
    folder.mkdir()
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    edits = {
        "spaces": {"PixelSpacing": " 0.5 \\0.5 ", "SeriesDescription": "  t2 stir \\ cor ", "InstanceNumber": " +7"},
        "multi_text": {"ImageType": "ORIGINAL\\PRIMARY\\M\\NORM", "ScanningSequence": "SE\\IR",
                       "ScanOptions": "FS", "PatientName": "Doe^Jane=", "StudyDescription": ""},
        "empty_numbers": {"RescaleSlope": "", "SliceThickness": "", "EchoTime": ""},
        "inversion": {"InversionTime": "150", "RepetitionTime": "4000.5", "SeriesNumber": "0012"},
        "charset_latin1": {"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Muller^Anna"},
        "charset_latin1_text": {"SpecificCharacterSet": "ISO_IR 100", "PatientName": "M\u00fcller^Anna"},
        "charset_other": {"SpecificCharacterSet": "ISO_IR 144", "PatientName": "Ivanov"},
        "no_uids": {"SeriesInstanceUID": None, "StudyInstanceUID": None},
        "decimal_is": {"InstanceNumber": "3.0"},
        # Vendors' private b-values and directions (the plain reader reads them with their creators).
        "siemens_b": {"private": [(0x0019, "SIEMENS MR HEADER", 0x0C, "IS", "800"),
                                  (0x0019, "SIEMENS MR HEADER", 0x0E, "FD", [0.0, 0.7071, -0.7071])]},
        "siemens_b_block11": {"private": [(0x0019, "SOMEONE ELSE", 0x0C, "LO", "not a b-value"),
                                          (0x0019, "SIEMENS MR HEADER", 0x0C, "IS", "1000")]},
        "ge_b": {"ScanningSequence": "EP\\SE",
                 "private": [(0x0043, "GEMS_PARM_01", 0x39, "IS", ["1000000500", "8", "0", "0"])]},
        "ge_not_diffusion": {"private": [(0x0043, "GEMS_PARM_01", 0x39, "IS", ["7", "0"])]},
        "philips_b": {"private": [(0x2001, "Philips Imaging DD 001", 0x03, "FL", 50.0)]},
        "other_creator": {"private": [(0x0019, "GEMS_ACQU_01", 0x0C, "SS", 5)]},
        "siemens_b_un": {"private": [(0x0019, "SIEMENS MR HEADER", 0x0C, "UN", b"800 ")]},
    }
    paths = []
    for name, values in edits.items():
        for syntax in (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian):
            ds = copy.deepcopy(source)
            for keyword, value in values.items():
                if keyword == "private":
                    for group, creator, offset, vr, item in value:
                        ds.private_block(group, creator, create=True).add_new(offset, vr, item)
                elif value is None:
                    ds.pop(keyword, None)
                else:
                    setattr(ds, keyword, value)
            ds.file_meta.TransferSyntaxUID = syntax
            path = folder / f"{name}-{syntax.name.split()[0]}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def outcome(function, path: Path):
    try:
        return function(path)
    except dicom_index.SkipFile as exc:
        return f"skip: {exc}"


def pydicom_only(path: Path):
    with dicom_index.tolerant_reading():
        return dicom_index._records(path, *dicom_index.read_header(path))


def test_the_keyword_table_is_pydicom_s_dictionary():
    for keyword, (tag, vr) in ATTRIBUTES.items():
        assert tag_for_keyword(keyword) == tag and dictionary_VR(tag) == vr, keyword
    for (group, creator, offset), vr in PRIVATE_ATTRIBUTES.items():
        assert private_dictionary_VR(group << 16 | 0x1000 | offset, creator) == vr, (creator, offset)


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # writing the "3.0" variant
def test_plain_reading_gives_pydicom_s_records_on_the_whole_corpus(tmp_path, small_study, monkeypatch):
    files = corpus(tmp_path, small_study)
    plain = [p for p in files if read_plain_header(p) is not None]
    for path in plain:
        header, start = read_plain_header(path)
        assert outcome(lambda p: dicom_index._records(p, header, start), path) == outcome(pydicom_only, path), path
    names = {p.name for p in plain}
    # Not vacuous: real files and the variants do go the plain way; the unusual ones do not.
    assert {"MR_small.dcm", "MR_small_implicit.dcm", "spaces-Explicit.dcm", "spaces-Implicit.dcm",
            "multi_text-Explicit.dcm", "empty_numbers-Implicit.dcm", "charset_latin1-Explicit.dcm"} <= names
    assert not names & {"MR_small_bigendian.dcm", "MR_small_RLE.dcm", "charset_latin1_text-Explicit.dcm",
                        "charset_other-Explicit.dcm", "emri_small.dcm", "no_meta.dcm", "siemens_b_un-Explicit.dcm"}
    # Files with the vendors' private b-values go the plain way too, and give their b-values.
    vendor = {f"{name}-{syntax}.dcm" for name in ("siemens_b", "siemens_b_block11", "ge_b", "ge_not_diffusion",
                                                   "philips_b", "other_creator") for syntax in ("Explicit", "Implicit")}
    assert vendor <= names
    b_values = {p.name: dicom_index._records(p, *read_plain_header(p))[0].split_values for p in plain
                if p.name in vendor}
    assert b_values["siemens_b-Implicit.dcm"]["b_value"] == 800.0
    assert b_values["siemens_b-Explicit.dcm"]["diffusion_direction"] == [0.0, 0.707, -0.707]
    assert b_values["siemens_b_block11-Explicit.dcm"]["b_value"] == 1000.0
    assert b_values["ge_b-Implicit.dcm"]["b_value"] == 500.0 and "b_value" not in b_values["ge_not_diffusion-Explicit.dcm"]
    assert b_values["philips_b-Explicit.dcm"]["b_value"] == 50.0
    assert "b_value" not in b_values["other_creator-Implicit.dcm"]
    assert sum(p.is_relative_to(small_study) for p in plain) == sum(1 for p in small_study.rglob("*")
                                                                        if p.is_file() and p.suffix != ".json")


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
@pytest.mark.filterwarnings("ignore:Expected explicit VR, but found implicit VR")  # SC_rgb_jpeg.dcm, read directly
def test_indexing_gives_the_same_records_and_reasons_with_or_without_the_plain_reader(tmp_path, small_study,
                                                                                        monkeypatch):
    files = corpus(tmp_path, small_study)
    with_plain = [outcome(dicom_index.index_dicom_file, p) for p in files]
    monkeypatch.setattr(dicom_index, "read_plain_header", lambda path: None)
    assert [outcome(dicom_index.index_dicom_file, p) for p in files] == with_plain


def test_importing_plain_files_does_not_load_pydicom(small_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(small_study, study, ignore=shutil.ignore_patterns("*.json"))  # pydicom says why JSON is not DICOM
    script = textwrap.dedent(
        f"""
        import sys
        from cno_annotate.cli import main
        assert main(["import", {str(study)!r}, "--store", {str(tmp_path / 's')!r}]) == 0
        assert "pydicom" not in sys.modules
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

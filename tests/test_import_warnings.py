"""pydicom's warnings while a file is read go into the import report, named by file, not to stderr."""

from __future__ import annotations

import shutil
import warnings

from pydicom.data import get_testdata_file

from cno_annotate.importer import import_paths
from cno_annotate.store import Store

#: pydicom warns "Expected explicit VR, but found implicit VR" while reading this file.
WARNING_FILE = "SC_rgb_jpeg.dcm"


def test_warnings_while_reading_go_to_the_report_of_that_file(tmp_path, recwarn):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file(WARNING_FILE, download=False), folder / "a.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm", download=False), folder / "b.dcm")
    filters_before = list(warnings.filters)
    report = import_paths(Store.open(tmp_path / "store"), [folder])
    assert [w for w in recwarn.list if "VR" in str(w.message)] == []  # nothing escaped to the caller
    assert warnings.filters == filters_before  # scoped: the process's filters are untouched
    (warned,) = report.warnings
    assert warned["path"].endswith("a.dcm")
    assert "Expected explicit VR, but found implicit VR" in warned["message"]
    assert report.as_dict(Store.open(tmp_path / "store"))["warnings"] == report.warnings


def test_the_cli_prints_warnings_in_its_summary_not_as_python_warnings(tmp_path, cli):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file(WARNING_FILE, download=False), folder / "a.dcm")
    code, out, err = cli("import", str(folder), "--store", str(tmp_path / "store"))
    assert code == 1 and err.count("\n") == 1 and "nothing imported" in err  # the file has no usable image
    assert "UserWarning" not in err and "Expected explicit VR" not in err
    assert "warnings for 1 file:" in out and "a.dcm: Expected explicit VR, but found implicit VR" in out
    code, out, err = cli("import-log", "--store", str(tmp_path / "store"))
    assert "a.dcm: warning: Expected explicit VR" in out

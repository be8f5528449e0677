"""Importing and using the package leaves other programs' pydicom settings alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cno_annotate.io import dicom_index


def test_pydicom_reading_mode_is_not_changed_for_the_process(tmp_path):
    script = textwrap.dedent(f"""
        import pydicom
        before = pydicom.config.settings.reading_validation_mode
        import cno_annotate.cli, cno_annotate.importer, cno_annotate.volumes
        from cno_annotate.store.db import Store
        from cno_annotate.importer import import_paths
        from pathlib import Path
        from cno_annotate.sample import StudyPlan, generate_study
        folder = Path({str(tmp_path / "s")!r})
        generate_study(folder, StudyPlan(stations=2, slices=3, matrix=32, seed=1))
        store = Store.open({str(tmp_path / "store")!r})
        import_paths(store, [folder])
        from cno_annotate.volumes import load_volume
        for row in store.volumes():
            load_volume(store, row.volume_id)
        assert pydicom.config.settings.reading_validation_mode == before, pydicom.config.settings.reading_validation_mode
        print("same")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and "same" in proc.stdout, proc.stderr


def test_header_value_memo_lives_only_as_long_as_an_import(sample_store):
    # sample_store has run a whole import in this process
    assert dicom_index._converted is None
    with dicom_index.header_value_cache():
        assert dicom_index._converted is not None
    assert dicom_index._converted is None


def test_header_value_memo_never_holds_more_than_its_limit(small_study):
    """A long import cannot grow the memo without bound; values stay exactly what pydicom converts."""
    import pydicom

    keywords = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "ImagePositionPatient",
                "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns", "SeriesDescription")
    files = sorted(p for p in small_study.rglob("*") if p.is_file() and p.suffix != ".json")[:12]
    with dicom_index.header_value_cache(limit=7):
        memo = dicom_index._converted
        assert memo is not None
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for keyword in keywords:
                assert dicom_index._get(ds, keyword) == pydicom.dcmread(path, stop_before_pixels=True).get(keyword)
                assert len(memo.values) <= 7
        assert memo.values  # it did memoise

"""Import quirks: the store's own files inside an imported folder are not reported."""

from __future__ import annotations

import shutil

from cno_annotate.importer import import_paths
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume


def test_the_stores_own_files_inside_an_imported_folder_are_skipped_silently(small_study, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_study, data)
    store = Store.open(data / "store")  # the store lives inside the folder being imported
    import_paths(store, [data])
    composed = next(v for v in store.volumes() if v.kind == "composed")
    load_volume(store, composed.volume_id)  # fills cache/
    assert any(store.cache_dir.iterdir())
    report = import_paths(store, [data])
    reported = [s["path"] for s in report.skipped]
    assert not [p for p in reported if "/store/" in p], reported
    assert reported == []  # ground_truth.json is a known non-image file: counted, not listed
    assert [p.rsplit("/", 1)[-1] for p in report.ignored] == ["ground_truth.json"]
    store.close()


def test_a_file_with_two_character_sets_is_indexed_not_refused_with_a_type_error(tmp_path):
    import pydicom.data

    path = pydicom.data.get_testdata_file("J2K_pixelrep_mismatch.dcm")  # SpecificCharacterSet has 2 values
    store = Store.open(tmp_path / "store")
    report = import_paths(store, [path])
    assert not any("unhashable" in s["reason"] or "TypeError" in s["reason"] for s in report.skipped), report.skipped
    assert report.new_instances == 1
    store.close()

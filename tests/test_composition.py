"""Whole-body composition as a reader meets it: reasons, gaps, repeated stations, missing slices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cno_annotate.importer import import_paths
from cno_annotate.store.derived import CompositionNote
from cno_annotate.volumes import load_volume


def series_folder(study: Path, number: int) -> Path:
    return study / "DICOM" / "PA000001" / "ST000001" / f"SE{number:06d}"


def edit_series(folder: Path, edit) -> None:
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)


def shift(dz: float):
    def edit(ds):
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                   float(ds.ImagePositionPatient[2]) + dz]
    return edit


def notes(store, role="STIR") -> list[CompositionNote]:
    return [n for n in store.compositions() if n.role == role]


def test_stations_too_far_apart_say_why_they_do_not_compose(small_study, copy_tree, store, cli):
    study = copy_tree(small_study)
    edit_series(series_folder(study, 103), shift(-40.0))  # 18.6 mm overlap becomes a 21.4 mm gap
    import_paths(store, [study])
    stir = notes(store)
    assert sorted(len(n.detail["stations"]) for n in stir) == [1, 2]
    alone = next(n for n in stir if len(n.detail["stations"]) == 1)
    assert alone.volume_id is None and "not composed" in alone.message
    assert "21.4 mm apart (more than 10 mm)" in alone.message
    code, out, _ = cli("series", "--store", store.root)
    assert code == 0 and "21.4 mm apart (more than 10 mm)" in out and "composed from 2 stations" in out
    code, out, _ = cli("series", "--store", store.root, "--json")
    station = next(v for v in json.loads(out) if v["volume_id"] == alone.detail["stations"][0])
    assert "21.4 mm apart" in station["composition"]["message"] and station["composition"]["composed"] is None


def test_a_gap_under_10_mm_composes_and_its_empty_rows_are_flagged(small_study, copy_tree, store, cli):
    study = copy_tree(small_study)
    edit_series(series_folder(study, 103), shift(-28.0))  # a 9.4 mm gap
    code, out, _ = cli("import", study, "--store", store.root)
    assert code == 0 and "gap 9.4 mm" in out and "FLAGGED" in out
    (note,) = [n for n in notes(store) if n.volume_id]
    empty = note.detail["empty_rows"]
    assert empty >= 1 and f"{empty} empty rows" in note.message
    volume = load_volume(store, note.volume_id)
    assert int((~volume.array.any(axis=(0, 2))).sum()) == empty  # the flag counts the rows a reader sees empty
    code, out, _ = cli("import", study, "--store", store.root, "--json")
    summary = json.loads(out)
    assert any(c["empty_rows"] == empty and c["role"] == "STIR" for c in summary["composition"])


def repeat_station(study: Path, number: int, new_number: int) -> Path:
    """Acquire a station again (after motion): new series, later series number, other pixels."""
    target = series_folder(study, new_number)
    shutil.copytree(series_folder(study, number), target)
    series_uid = pydicom.uid.generate_uid()

    def edit(ds):
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, new_number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.PixelData = (ds.pixel_array + 1).astype(ds.pixel_array.dtype).tobytes()
    edit_series(target, edit)
    return target


def test_a_repeated_station_gives_one_whole_body_with_the_latest_and_the_reader_can_switch(
        small_study, copy_tree, store, cli):
    study = copy_tree(small_study)
    repeat_station(study, 102, 104)
    import_paths(store, [study])
    stir = [v for v in store.volumes() if v.kind == "composed" and v.role == "STIR"]
    assert len(stir) == 1 and stir[0].stations == 3
    first = pydicom.dcmread(next(series_folder(study, 102).iterdir()), stop_before_pixels=True).SeriesInstanceUID
    repeat = pydicom.dcmread(next(series_folder(study, 104).iterdir()), stop_before_pixels=True).SeriesInstanceUID
    assert repeat in stir[0].members and first not in stir[0].members
    (alternative,) = stir[0].composition["alternatives"]
    assert alternative["used"] == repeat and alternative["others"] == [first]
    code, out, _ = cli("series", "--store", store.root)
    assert f"using {repeat} (the latest acquisition), alternative {first}" in out

    code, out, _ = cli("use-station", first, "--store", store.root)
    assert code == 0 and f"using {first} (chosen by the reader)" in out
    (stir,) = [v for v in store.volumes() if v.kind == "composed" and v.role == "STIR"]
    assert first in stir.members and repeat not in stir.members and stir.stations == 3
    import_paths(store, [study])  # the choice survives a re-import
    (stir,) = [v for v in store.volumes() if v.kind == "composed" and v.role == "STIR"]
    assert first in stir.members
    assert cli("use-station", first, "--latest", "--store", store.root)[0] == 0
    (stir,) = [v for v in store.volumes() if v.kind == "composed" and v.role == "STIR"]
    assert repeat in stir.members
    head = pydicom.dcmread(next(series_folder(study, 101).iterdir()), stop_before_pixels=True).SeriesInstanceUID
    code, _, err = cli("use-station", head, "--store", store.root)
    assert code == 1 and "not a repeated station" in err


def test_a_missing_slice_is_flagged_and_does_not_darken_the_neighbour(small_study, copy_tree, store, tmp_path):
    from cno_annotate.store import Store

    full = Store.open(tmp_path / "full")
    import_paths(full, [small_study])
    study = copy_tree(small_study)
    files = sorted(series_folder(study, 102).iterdir())
    positions = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[1]) for f in files]
    files[int(np.argsort(positions)[2])].unlink()  # the third slice along the normal
    import_paths(store, [study])
    (note,) = [n for n in notes(store) if n.volume_id]
    assert "misses 1 slice (" in note.message and "FLAGGED" in note.message
    (full_note,) = [n for n in notes(full) if n.volume_id]
    got, reference = load_volume(store, note.volume_id), load_volume(full, full_note.volume_id)
    # Rows where stations 101 and 102 overlap, in the plane of the missing slice.
    upper = load_volume(full, full_note.detail["stations"][0])
    lowest_z = upper.index_to_lps(np.array([0, upper.shape[1] - 1, 0]))[2]
    rows = np.arange(got.shape[1])
    z = got.index_to_lps(np.stack([np.zeros(rows.size), rows, np.zeros(rows.size)], axis=1))[:, 2]
    overlap = (z >= lowest_z) & (z <= lowest_z + 18.0)
    assert overlap.any()
    ratio = got.array[2][overlap].mean() / reference.array[2][overlap].mean()
    assert ratio == pytest.approx(1.0, abs=0.1)


def test_the_composed_array_is_zeros_in_small_pages_that_save_and_load_like_any_array(tmp_path):
    from cno_annotate.io.compose import zeroed

    array = zeroed((3, 50, 40))
    assert array.dtype == np.float32 and array.shape == (3, 50, 40) and array.flags.writeable
    assert not array.any()
    array[:, 10:20] += 2.5  # a station's band in every slice
    np.save(tmp_path / "v.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), array)
    assert zeroed((0, 4, 4)).shape == (0, 4, 4)

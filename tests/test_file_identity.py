"""A file is shown only while it is the one that was imported (issue 11, trial: swapped folders, relocate, truncation)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from cno_annotate.store.catalog import VolumeRow
from cno_annotate.volumes import load_volume


@pytest.fixture(scope="module")
def other_child(tmp_path_factory) -> Path:
    """Another child's study with the same folder and file names as ``small_study``."""
    out = tmp_path_factory.mktemp("other") / "study"
    generate_study(out, StudyPlan(stations=3, slices=6, matrix=48, seed=4))
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("IM*") if p.is_file())


def _swap(folder: Path, replacement: Path) -> None:
    """Put another study's files in ``folder`` under the same names (sizes equal; times changed)."""
    shutil.rmtree(folder)
    shutil.copytree(replacement, folder)


def _stacks(store: Store) -> list[VolumeRow]:
    return [v for v in store.volumes() if v.kind == "stack"]


def test_same_names_in_the_test_data(small_study, other_child):
    mine, theirs = _files(small_study), _files(other_child)
    assert [p.relative_to(small_study) for p in mine] == [p.relative_to(other_child) for p in theirs]


def test_a_swapped_folder_never_shows_the_other_childs_pixels(small_study, other_child, tmp_path):
    cd = tmp_path / "cd"
    shutil.copytree(small_study, cd)
    store = Store.open(tmp_path / "s")
    import_paths(store, [cd])
    stack = _stacks(store)[0]
    _swap(cd, other_child)
    with pytest.raises(CnoError) as caught:
        load_volume(store, stack.volume_id)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{stack.shape[0]} files of this series hold other images than the ones imported" in message, message


def test_one_swapped_file_is_a_missing_slice_not_another_childs_slice(small_study, other_child, tmp_path):
    cd = tmp_path / "cd"
    shutil.copytree(small_study, cd)
    store = Store.open(tmp_path / "s")
    import_paths(store, [cd])
    stack = _stacks(store)[0]
    before = load_volume(store, stack.volume_id, use_cache=False)
    images = sorted(store.images(stack.series_uid), key=lambda image: image.position[1])
    victim = Path(images[2].path)
    shutil.copy(other_child / victim.relative_to(cd), victim)
    after = load_volume(store, stack.volume_id, use_cache=False)
    assert [e["path"] for e in after.load.errors] == [str(victim)]
    assert "holds another image" in after.load.errors[0]["reason"]
    assert len(after.load.missing_slices) == 1
    k = after.load.missing_slices[0]
    assert not after.array[k].any()
    keep = [n for n in range(after.shape[0]) if n != k]
    assert np.array_equal(after.array[keep], before.array[keep])


def test_a_copy_of_the_same_file_with_a_new_time_still_loads(small_study, tmp_path):
    cd = tmp_path / "cd"
    shutil.copytree(small_study, cd)
    store = Store.open(tmp_path / "s")
    import_paths(store, [cd])
    for path in _files(cd):
        os.utime(path, ns=(1, 1))
    for stack in _stacks(store):
        assert load_volume(store, stack.volume_id, use_cache=False).load.errors == []


def test_a_composed_volume_is_not_served_from_the_cache_once_its_files_changed(small_study, other_child, tmp_path):
    cd = tmp_path / "cd"
    shutil.copytree(small_study, cd)
    store = Store.open(tmp_path / "s")
    import_paths(store, [cd])
    composed = next(v for v in store.volumes() if v.kind == "composed")
    load_volume(store, composed.volume_id)  # fills the cache
    member = store.volume(composed.members[0])
    first = Path(store.images(member.series_uid)[0].path)
    shutil.copy(other_child / first.relative_to(cd), first)
    again = load_volume(store, composed.volume_id)
    assert not again.load.cached
    assert [e["path"] for e in again.load.errors] == [str(first)]


def test_export_of_a_swapped_folder_fails_in_one_line(small_study, other_child, tmp_path, cli):
    cd = tmp_path / "cd"
    shutil.copytree(small_study, cd)
    code, _, err = cli("import", cd, "--store", tmp_path / "s")
    assert code == 0, err
    store = Store.open(tmp_path / "s")
    composed = next(v for v in store.volumes() if v.kind == "composed")
    _swap(cd, other_child)
    code, out, err = cli("export-nifti", composed.volume_id, "--out", tmp_path / "x.nii", "--store",
                         tmp_path / "s")
    assert code == 1
    assert not (tmp_path / "x.nii").exists()
    assert len(err.strip().splitlines()) == 1, err
    assert "hold other images than the ones imported" in err


def test_a_reimport_of_a_swapped_folder_repoints_every_instance(small_study, other_child, tmp_path):
    cd = tmp_path / "cd"
    shutil.copytree(small_study, cd)
    store = Store.open(tmp_path / "s")
    first = import_paths(store, [cd])
    _swap(cd, other_child)
    second = import_paths(store, [cd])
    assert second.new_instances == first.new_instances and second.replaced == first.new_instances
    shared = store.db.execute("SELECT path, COUNT(DISTINCT sop_uid) FROM images WHERE path != '' GROUP BY path "
                              "HAVING COUNT(DISTINCT sop_uid) > 1").fetchall()
    assert shared == []
    missing = store.missing_files()
    assert sorted(missing.values()) == [first.new_instances]
    # the first child's files turn up elsewhere: a re-import re-links them
    shutil.copytree(small_study, tmp_path / "found")
    third = import_paths(store, [tmp_path / "found"])
    assert third.relinked == first.new_instances and third.duplicates == 0
    assert store.missing_files() == {}
    for stack in _stacks(store):
        assert load_volume(store, stack.volume_id, use_cache=False).load.errors == []


# -- relocate checks each target before it re-links ------------------------------------------
def _paths_and_sizes(store: Store) -> list[tuple]:
    return store.db.execute("SELECT i.path, f.size, f.mtime_ns FROM images i LEFT JOIN files f USING (path) "
                            "ORDER BY i.sop_uid, i.frame").fetchall()


def test_relocate_onto_another_childs_files_is_refused_and_changes_nothing(small_study, other_child, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "mine")
    shutil.copytree(other_child, tmp_path / "theirs")
    cli("import", tmp_path / "mine", "--store", tmp_path / "s")
    store = Store.open(tmp_path / "s")
    before = [tuple(r) for r in _paths_and_sizes(store)]
    shutil.rmtree(tmp_path / "mine")
    code, out, err = cli("relocate", tmp_path / "mine", tmp_path / "theirs", "--store", tmp_path / "s")
    assert code == 1, out
    assert len(err.strip().splitlines()) == 1, err
    assert "hold other images" in err and "nothing was changed" in err
    assert [tuple(r) for r in _paths_and_sizes(store)] == before


def test_relocate_onto_a_folder_that_does_not_exist_is_refused(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "mine")
    cli("import", tmp_path / "mine", "--store", tmp_path / "s")
    store = Store.open(tmp_path / "s")
    before = [tuple(r) for r in _paths_and_sizes(store)]
    code, out, err = cli("relocate", tmp_path / "mine", tmp_path / "typo", "--store", tmp_path / "s")
    assert code == 1, out
    assert len(err.strip().splitlines()) == 1 and "nothing was changed" in err, err
    assert [tuple(r) for r in _paths_and_sizes(store)] == before
    assert store.missing_files() == {}


def test_moving_back_and_relocating_back_works(small_study, tmp_path, cli):
    a, b = tmp_path / "A", tmp_path / "B"
    shutil.copytree(small_study, a)
    cli("import", a, "--store", tmp_path / "s")
    a.rename(b)
    code, out, err = cli("import", b, "--store", tmp_path / "s")
    assert code == 0 and "re-linked" in out, out + err
    b.rename(a)
    code, out, err = cli("relocate", b, a, "--store", tmp_path / "s")
    assert code == 0, err
    store = Store.open(tmp_path / "s")
    assert store.missing_files() == {}
    for stack in _stacks(store):
        assert load_volume(store, stack.volume_id, use_cache=False).load.errors == []
    code, out, err = cli("import", a, "--store", tmp_path / "s")
    assert code == 0 and "0 new" in out, out + err


def test_export_of_a_composed_volume_counts_the_missing_files_of_every_station(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "before")
    cli("import", tmp_path / "before", "--store", tmp_path / "s")
    store = Store.open(tmp_path / "s")
    composed = next(v for v in store.volumes() if v.kind == "composed")
    files = sum(len({i.path for i in store.images(store.volume(m).series_uid)}) for m in composed.members)
    (tmp_path / "before").rename(tmp_path / "after")
    code, out, err = cli("export-nifti", composed.volume_id, "--out", tmp_path / "x.nii", "--store", tmp_path / "s")
    assert code == 1
    assert f"{files} files of this whole-body volume are missing" in err, err


def test_export_of_a_volume_with_one_file_cut_short_fails_in_one_line(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "cd")
    cli("import", tmp_path / "cd", "--store", tmp_path / "s")
    store = Store.open(tmp_path / "s")
    stack = _stacks(store)[0]
    victim = Path(store.images(stack.series_uid)[0].path)
    victim.write_bytes(victim.read_bytes()[:-500])
    code, out, err = cli("export-nifti", stack.volume_id, "--out", tmp_path / "x.nii", "--store", tmp_path / "s")
    assert code == 1 and not (tmp_path / "x.nii").exists()
    assert len(err.strip().splitlines()) == 1, err
    assert "1 file of this volume could not be used" in err and "file ends after" in err, err
    volume = load_volume(store, stack.volume_id, use_cache=False)
    assert len(volume.load.missing_slices) == 1


def test_a_file_cut_short_after_import_is_a_gap_once_imported_again(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "cd")
    cli("import", tmp_path / "cd", "--store", tmp_path / "s")
    store = Store.open(tmp_path / "s")
    stack = _stacks(store)[0]
    images = sorted(store.images(stack.series_uid), key=lambda image: image.position[1])
    victim = Path(images[2].path)
    whole = victim.read_bytes()
    victim.write_bytes(whole[:-500])
    code, out, err = cli("import", tmp_path / "cd", "--store", tmp_path / "s")
    assert code == 0, err
    assert f"{victim}: truncated pixel data" in out, out
    code, out, err = cli("series", "--store", tmp_path / "s")
    line = next(line for line in out.splitlines() if line.strip().startswith(stack.volume_id + " "))
    assert "GAPS: 1 missing slices" in line, out
    volume = load_volume(store, stack.volume_id, use_cache=False)
    assert volume.load.missing_slices == [2]
    victim.write_bytes(whole)  # restored: imported again, the gap closes
    code, out, err = cli("import", tmp_path / "cd", "--store", tmp_path / "s")
    code, out, err = cli("series", "--store", tmp_path / "s")
    line = next(line for line in out.splitlines() if line.strip().startswith(stack.volume_id + " "))
    assert "GAPS" not in line, out


def test_a_touched_plain_file_is_checked_without_pydicom(small_study, tmp_path, monkeypatch):
    shutil.copytree(small_study, tmp_path / "cd")
    store = Store.open(tmp_path / "s")
    import_paths(store, [tmp_path / "cd"])
    for path in _files(tmp_path / "cd"):
        os.utime(path, ns=(1, 1))
    import pydicom

    def no_pydicom(*args, **kwargs):
        raise AssertionError("pydicom read a plain header")

    monkeypatch.setattr(pydicom, "dcmread", no_pydicom)
    stack = _stacks(store)[0]
    assert load_volume(store, stack.volume_id, use_cache=False).load.errors == []

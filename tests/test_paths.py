"""File locations: absolute paths, moved folders, odd names, symlinks, the volume cache, pipes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cno_annotate.importer import import_paths
from cno_annotate.paths import from_text
from cno_annotate.store import Store
from cno_annotate.store.catalog import VolumeRow
from cno_annotate.store.db import MIGRATIONS
from cno_annotate.store.sqlite import migrate
from cno_annotate.volumes import load_volume


def _load_all(store: Store) -> int:
    """Load every volume of the store without the cache; return how many loaded cleanly."""
    volumes = store.volumes()
    assert volumes
    for row in volumes:
        volume = load_volume(store, row.volume_id, use_cache=False)
        assert volume.load.errors == [], volume.load.errors[:1]
    return len(volumes)


def _image_paths(store: Store) -> list[str]:
    """The recorded file of every image, as the file system spells it."""
    return [from_text(r[0]) for r in store.db.execute("SELECT DISTINCT path FROM images ORDER BY path")]


# -- 1: paths are stored absolute and normalised ----------------------------------
def test_import_with_a_relative_path_then_load_every_volume_from_elsewhere(small_study, tmp_path, monkeypatch, cli):
    here = tmp_path / "A"
    shutil.copytree(small_study, here / "cor_ref")
    monkeypatch.chdir(here)
    code, _, err = cli("import", "cor_ref", "--store", tmp_path / "store")
    assert code == 0, err
    elsewhere = tmp_path / "B"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = Store.open(tmp_path / "store")
    assert all(os.path.isabs(p) and p == os.path.normpath(p) for p in _image_paths(store))
    assert _load_all(store) >= 4
    composed = next(v for v in store.volumes() if v.kind == "composed")
    code, out, err = cli("export-nifti", composed.volume_id, "--out", "whole.nii", "--store", tmp_path / "store")
    assert code == 0, err
    assert (elsewhere / "whole.nii").stat().st_size > 0


def test_the_same_file_by_two_spellings_is_one_file(small_study, tmp_path, monkeypatch, store):
    shutil.copytree(small_study, tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    first = import_paths(store, [Path("./a/../a")])
    again = import_paths(store, [tmp_path / "a"])
    assert first.new_instances > 0
    assert again.new_instances == 0 and again.duplicates == 0
    assert again.already_imported == first.new_instances
    assert not [s for s in again.skipped if "duplicate" in s["reason"]]


def _old_store_with_relative_paths(tmp_path: Path, study: Path, base: Path) -> Path:
    """A store at schema version 3 (before paths were made absolute) holding paths relative to ``base``."""
    new = Store.open(tmp_path / "new-store")
    import_paths(new, [study])
    new.close()
    old_root = tmp_path / "old-store"
    old_root.mkdir()
    db = sqlite3.connect(old_root / "store.sqlite", isolation_level=None)
    migrate(db, MIGRATIONS[:3])
    db.execute("ATTACH ? AS src", (str(tmp_path / "new-store" / "store.sqlite"),))
    for (table,) in db.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'").fetchall():
        columns = ", ".join(r[1] for r in db.execute(f"PRAGMA main.table_info({table})"))
        db.execute(f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM src.{table}")
    for (path,) in db.execute("SELECT DISTINCT path FROM main.images").fetchall():
        db.execute("UPDATE main.images SET path = ? WHERE path = ?", (os.path.relpath(path, base), path))
    db.execute("DETACH src")
    db.close()
    return old_root


def test_migration_resolves_relative_paths_it_can_prove(small_study, tmp_path, monkeypatch):
    shutil.copytree(small_study, tmp_path / "A" / "cor_ref")
    old = _old_store_with_relative_paths(tmp_path, tmp_path / "A" / "cor_ref", tmp_path / "A")
    monkeypatch.chdir(tmp_path / "A")  # the folder the old import ran in
    store = Store.open(old)
    paths = _image_paths(store)
    assert paths and all(p.startswith(str(tmp_path / "A" / "cor_ref") + os.sep) for p in paths)
    monkeypatch.chdir(tmp_path)
    assert _load_all(store) >= 4
    assert all(s.missing_files == 0 for s in store.studies())


def test_migration_leaves_unprovable_relative_paths_and_reports_them_missing(small_study, tmp_path, monkeypatch, cli):
    shutil.copytree(small_study, tmp_path / "A" / "cor_ref")
    old = _old_store_with_relative_paths(tmp_path, tmp_path / "A" / "cor_ref", tmp_path / "A")
    (tmp_path / "C").mkdir()
    monkeypatch.chdir(tmp_path / "C")  # the original folder is unknown here
    store = Store.open(old)
    relative = _image_paths(store)
    assert relative and not any(os.path.isabs(p) for p in relative)
    code, out, _ = cli("studies", "--json", "--store", old)
    (study,) = json.loads(out)
    assert study["missing_files"] == len(relative)
    # a re-import from the real folder re-links them
    report = import_paths(store, [tmp_path / "A" / "cor_ref"])
    assert report.relinked == len(relative) and report.new_instances == 0
    assert store.studies()[0].missing_files == 0
    assert _load_all(store) >= 4


# -- 2: moved files can be re-linked ----------------------------------------------
def test_a_moved_folder_is_relinked_by_a_reimport(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "before")
    code, _, err = cli("import", tmp_path / "before", "--store", tmp_path / "s")
    assert code == 0, err
    (tmp_path / "before").rename(tmp_path / "after")
    code, out, _ = cli("studies", "--json", "--store", tmp_path / "s")
    (study,) = json.loads(out)
    assert study["missing_files"] == study["images"] > 0
    code, out, _ = cli("studies", "--store", tmp_path / "s")
    assert "MISSING: " in out
    code, out, err = cli("import", tmp_path / "after", "--store", tmp_path / "s", "--json")
    summary = json.loads(out)
    assert summary["relinked"] == study["images"] and summary["duplicates"] == 0 and summary["new_instances"] == 0
    code, out, err = cli("import", tmp_path / "after", "--store", tmp_path / "s")
    code, out, _ = cli("studies", "--json", "--store", tmp_path / "s")
    assert json.loads(out)[0]["missing_files"] == 0
    store = Store.open(tmp_path / "s")
    assert all(p.startswith(str(tmp_path / "after")) for p in _image_paths(store))
    assert _load_all(store) >= 4


def test_relinking_says_so_in_the_summary(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "before")
    cli("import", tmp_path / "before", "--store", tmp_path / "s")
    (tmp_path / "before").rename(tmp_path / "after")
    code, out, _ = cli("import", tmp_path / "after", "--store", tmp_path / "s")
    assert code == 0 and "re-linked" in out


def test_a_copy_next_to_the_original_is_still_a_duplicate(small_study, tmp_path, store):
    shutil.copytree(small_study, tmp_path / "one")
    shutil.copytree(small_study, tmp_path / "two")
    import_paths(store, [tmp_path / "one"])
    report = import_paths(store, [tmp_path / "two"])
    assert report.relinked == 0 and report.duplicates > 0
    assert all(p.startswith(str(tmp_path / "one")) for p in _image_paths(store))


def test_relocate_rewrites_a_path_prefix(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "disk1" / "study")
    shutil.copytree(small_study, tmp_path / "disk1" / "study2")  # same prefix as text, another folder
    cli("import", tmp_path / "disk1" / "study", "--store", tmp_path / "s")
    store = Store.open(tmp_path / "s")
    n_images = len(_image_paths(store))
    (tmp_path / "disk2").mkdir()
    (tmp_path / "disk1" / "study").rename(tmp_path / "disk2" / "study")
    code, out, err = cli("relocate", tmp_path / "disk1" / "study", tmp_path / "disk2" / "study", "--store", tmp_path / "s")
    assert code == 0, err
    assert f"{n_images} " in out
    assert all(p.startswith(str(tmp_path / "disk2" / "study") + os.sep) for p in _image_paths(store))
    assert store.studies()[0].missing_files == 0
    assert _load_all(store) >= 4
    code, out, err = cli("relocate", tmp_path / "nowhere", tmp_path / "disk3", "--store", tmp_path / "s")
    assert code == 1 and "no file" in err


def test_relocate_keeps_folder_boundaries(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "study2")
    cli("import", tmp_path / "study2", "--store", tmp_path / "s")
    code, out, err = cli("relocate", tmp_path / "study", tmp_path / "other", "--store", tmp_path / "s")
    assert code == 1
    store = Store.open(tmp_path / "s")
    assert all(p.startswith(str(tmp_path / "study2") + os.sep) for p in _image_paths(store))


# -- 5: file names that are not valid UTF-8 -----------------------------------------
def _bad_name(stem: bytes) -> str:
    return os.fsdecode(stem + b"-\xe9\xff.dcm")


@pytest.mark.skipif(sys.platform != "linux", reason="byte file names are a POSIX matter")
def test_a_file_name_that_is_not_utf8_does_not_stop_the_import(small_study, tmp_path, store, cli):
    folder = tmp_path / "odd"
    shutil.copytree(small_study, folder)
    renamed = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "ground_truth.json" and renamed < 3:
            path.rename(path.parent / _bad_name(path.name.encode()))
            renamed += 1
    (folder / _bad_name(b"notes")).write_bytes(b"not dicom")
    code, out, err = cli("import", folder, "--store", store.root)
    assert code == 0, err
    assert "notes-\\xe9\\xff.dcm" in out  # reported, printable, escaped
    report_runs = store.import_runs(1)
    assert report_runs[0]["finished"] is not None and report_runs[0]["summary"]["instances"] > 0
    stored = _image_paths(store)
    odd = [p for p in stored if "\udce9" in p]
    assert len(odd) == 3 and all(os.path.exists(p) for p in odd)  # round-trips to the real name
    assert _load_all(store) >= 4
    code, out, err = cli("import-log", "--store", store.root)
    assert code == 0 and "notes-\\xe9\\xff.dcm" in out
    code, out, err = cli("import-log", "--store", store.root, "--json")
    assert code == 0 and json.loads(out)
    again = import_paths(store, [folder])
    assert again.already_imported == again.instances and again.new_instances == 0


# -- 12: symlinked folders ----------------------------------------------------------
@pytest.mark.skipif(sys.platform != "linux", reason="symbolic links")
def test_a_symlinked_sub_folder_is_followed_once(small_study, tmp_path, store):
    top = tmp_path / "top"
    top.mkdir()
    shutil.copytree(small_study, tmp_path / "elsewhere")
    (top / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "loop").symlink_to(top, target_is_directory=True)  # a loop back up
    report = import_paths(store, [top])
    n_files = sum(1 for p in small_study.rglob("*") if p.is_file())
    assert report.files == n_files
    assert report.new_instances == n_files - 1  # all but ground_truth.json
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert "loop" in reasons and "already" in reasons["loop"]
    assert _load_all(store) >= 4


@pytest.mark.skipif(sys.platform != "linux", reason="symbolic links")
def test_a_broken_symlink_and_an_empty_folder_are_reported(tmp_path, store):
    top = tmp_path / "top"
    (top / "empty").mkdir(parents=True)
    (top / "dangling").symlink_to(tmp_path / "gone")
    report = import_paths(store, [top])
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert "broken symbolic link" in reasons["dangling"]
    report = import_paths(store, [top / "empty"])
    assert report.files == 0 and report.skipped and "no files" in report.skipped[0]["reason"]


# -- 14: the composed-volume cache --------------------------------------------------
def _composed(store: Store) -> list[VolumeRow]:
    return [v for v in store.volumes() if v.kind == "composed"]


def test_cache_is_limited_and_eviction_keeps_open_volumes_readable(small_study, store, monkeypatch):
    import_paths(store, [small_study])
    first, second = _composed(store)[:2]
    a = load_volume(store, first.volume_id)
    a_cached = load_volume(store, first.volume_id)
    assert a_cached.load.cached and isinstance(a_cached.array, np.memmap)
    expected = np.array(a.array)
    size = a.array.nbytes
    monkeypatch.setenv("CNO_ANNOTATE_CACHE_LIMIT", str(int(size * 1.5)))
    load_volume(store, second.volume_id)  # does not fit beside the first: the first is evicted
    files = sorted(store.cache_dir.glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith(second.volume_id)
    assert np.array_equal(np.asarray(a_cached.array), expected)  # the open (mapped) volume still reads
    assert not load_volume(store, first.volume_id).load.cached


def test_cache_keeps_the_most_recently_used(small_study, store, monkeypatch):
    import_paths(store, [small_study])
    first, second = _composed(store)[:2]
    size = load_volume(store, first.volume_id).array.nbytes
    load_volume(store, second.volume_id)
    os.utime(next(store.cache_dir.glob(first.volume_id + "*")), (1, 1))  # long unused
    os.utime(next(store.cache_dir.glob(second.volume_id + "*")), (2, 2))
    load_volume(store, first.volume_id)  # a hit makes it the most recent
    from cno_annotate.cache import VolumeCache

    VolumeCache(store.cache_dir, limit=int(size * 1.5)).trim()
    assert [p.name[: len(first.volume_id)] for p in store.cache_dir.glob("*.npy")] == [first.volume_id]


def test_cache_info_and_clear_commands(small_study, store, cli):
    import_paths(store, [small_study])
    kept = [load_volume(store, v.volume_id) for v in _composed(store)]
    kept = [load_volume(store, v.volume_id) for v in _composed(store)]  # memory maps of the cache
    expected = [np.array(v.array) for v in kept]
    code, out, err = cli("cache", "info", "--store", store.root, "--json")
    info = json.loads(out)
    assert code == 0 and info["files"] == len(kept) and info["bytes"] > 0 and info["limit_bytes"] > info["bytes"]
    code, out, err = cli("cache", "clear", "--store", store.root)
    assert code == 0 and "removed 2" in out
    assert not list(store.cache_dir.glob("*.npy"))
    assert all(np.array_equal(np.asarray(v.array), e) for v, e in zip(kept, expected))
    code, out, err = cli("cache", "info", "--store", store.root)
    assert code == 0 and "0 files" in out


def test_a_bad_cache_limit_is_a_clear_message(store, cli, monkeypatch):
    monkeypatch.setenv("CNO_ANNOTATE_CACHE_LIMIT", "lots")
    code, out, err = cli("cache", "info", "--store", store.root)
    assert code == 1 and "CNO_ANNOTATE_CACHE_LIMIT" in err and len(err.strip().splitlines()) == 1


# -- 15: a closed pipe ends quietly --------------------------------------------------
def test_a_closed_pipe_ends_quietly(small_study, tmp_path):
    store = tmp_path / "s"
    subprocess.run([sys.executable, "-m", "cno_annotate", "import", str(small_study), "--store", str(store)],
                   check=True, capture_output=True)
    for command in (["series"], ["series", "--json"], ["import-log"]):
        process = subprocess.Popen([sys.executable, "-m", "cno_annotate", *command, "--store", str(store)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()  # like `| head -0`: the reader is gone before anything is written
        err = process.stderr.read()
        assert process.wait(timeout=60) == 0, err
        assert err == b"", err


# -- speed as a user feels it: what a command imports ---------------------------------
LAZY = ("nibabel", "SimpleITK", "scipy", "matplotlib", "statsmodels", "jsonschema")


def test_the_cli_and_an_import_load_no_heavy_library(small_study, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from cno_annotate.cli import main
        loaded = sorted(m for m in {LAZY!r} if m in sys.modules)
        assert not loaded, ("at start-up", loaded)
        assert main(["import", {str(small_study)!r}, "--store", {str(tmp_path / 's')!r}]) == 0
        assert main(["studies", "--store", {str(tmp_path / 's')!r}]) == 0
        assert main(["series", "--store", {str(tmp_path / 's')!r}, "--json"]) == 0
        loaded = sorted(m for m in {LAZY!r} if m in sys.modules)
        assert not loaded, ("after import and listing", loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_listing_commands_load_neither_numpy_nor_pydicom_nor_plugins(small_study, tmp_path):
    import_paths(Store.open(tmp_path / "s"), [small_study])
    for command in (["studies"], ["series"], ["series", "--json"], ["import-log"]):
        script = textwrap.dedent(
            f"""
            import sys
            from cno_annotate.cli import main
            assert main({[*command, "--store", str(tmp_path / "s")]!r}) == 0
            loaded = sorted(m for m in ("numpy", "pydicom", "importlib.metadata", "cno_annotate_ui") if m in sys.modules)
            assert not loaded, loaded
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)


def test_reimport_of_an_unchanged_folder_reads_no_header(small_study, store, monkeypatch):
    first = import_paths(store, [small_study])
    import cno_annotate.importer as importer

    def no_header(path):
        raise AssertionError(f"header read again: {path}")

    monkeypatch.setattr(importer, "index_dicom_file", no_header)
    again = import_paths(store, [small_study])
    assert again.instances == first.instances and again.already_imported == first.instances
    assert again.studies == first.studies and again.series == first.series
    assert again.skipped == first.skipped and again.ignored == first.ignored  # ground_truth.json, known


def test_a_changed_file_is_read_again(small_study, tmp_path, store):
    folder = tmp_path / "study"
    shutil.copytree(small_study, folder)
    import_paths(store, [folder])
    victim = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "ground_truth.json")[0]
    victim.write_bytes(b"broken now")
    report = import_paths(store, [folder])
    assert any(Path(s["path"]) == victim for s in report.skipped)


def test_the_viewer_lists_a_study_with_missing_files(small_study, tmp_path, qtbot):
    from cno_annotate_ui.main_window import MainWindow

    shutil.copytree(small_study, tmp_path / "before")
    store = Store.open(tmp_path / "s")
    import_paths(store, [tmp_path / "before"])
    n_files = len(_image_paths(store))
    (tmp_path / "before").rename(tmp_path / "after")
    window = MainWindow(tmp_path / "s")
    qtbot.addWidget(window)
    window.show()  # the list counts missing files once shown (after the first image when a study opens)
    item = window.study_list.item(0)
    assert item.text().startswith(f"{n_files} files missing") and "relocate" in item.toolTip()


def test_a_read_only_store_composes_without_writing_a_cache_into_it(small_study, store, monkeypatch):
    """On read-only media the store's cache/ folder cannot be made: volumes compose anyway, cached elsewhere."""
    import errno

    from cno_annotate.store import db as store_db

    import_paths(store, [small_study])
    root, volume_id = store.root, _composed(store)[0].volume_id
    store.close()
    real_mkdir = Path.mkdir

    def read_only_mkdir(path, *args, **kwargs):
        if Path(path).is_relative_to(root):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    monkeypatch.setattr(store_db, "writable", lambda path: False)
    read_only = Store.open(root)
    assert read_only.read_only
    volume = load_volume(read_only, volume_id)
    assert volume.array.ndim == 3 and not (root / "cache").exists()
    assert not read_only.cache_dir.is_relative_to(root)
    read_only.close()

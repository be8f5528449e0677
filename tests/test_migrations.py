"""Stores written by every released schema version open and migrate without loss.

The stores under ``tests/legacy_stores/`` were written by the released programs (see the
README there); each is copied, opened with this program, and compared with a fresh store.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from cno_annotate.annotation.reads import list_reads, load_read
from cno_annotate.store.db import SCHEMA_VERSION, Store

LEGACY = Path(__file__).parent / "legacy_stores"
#: Every schema version main was ever at. 13, 16 and 20 never were: two migrations landed together each time.
VERSIONS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 17, 18, 19, 21]
#: Versions whose store holds reads (each with one lesion: distal femur, left, 'kept across migrations').
WITH_READS = VERSIONS[1:]
#: Versions written by make_store_4_to_19.py or make_store.py (21): the v3 reading study, each read with a
#: graded lesion and a unit mark.
WITH_GRADED_READS = [v for v in VERSIONS if v >= 4]
FIRST_WITH_ROIS = 11
FIRST_WITH_READING_TIME = 15


def _open_copy(tmp_path: Path, version: int) -> Store:
    folder = tmp_path / f"v{version}"
    folder.mkdir()
    shutil.copyfile(LEGACY / f"store-v{version}.sqlite", folder / "store.sqlite")
    return Store.open(folder)


def _columns(db: sqlite3.Connection) -> dict[str, list[tuple]]:
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: [tuple(c)[1:] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}


def test_every_released_version_has_a_frozen_store():
    assert sorted(int(p.stem.split("-v")[1]) for p in LEGACY.glob("store-v*.sqlite")) == VERSIONS
    assert VERSIONS[-1] <= SCHEMA_VERSION


@pytest.mark.parametrize("version", VERSIONS)
def test_frozen_store_is_at_its_version_before_opening(version):
    db = sqlite3.connect(LEGACY / f"store-v{version}.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == version
    finally:
        db.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_migrated_store_has_the_schema_of_a_fresh_store(tmp_path, version):
    migrated = _open_copy(tmp_path, version)
    fresh = Store.open(tmp_path / "fresh")
    assert migrated.schema_version == SCHEMA_VERSION
    assert _columns(migrated.db) == _columns(fresh.db)


@pytest.mark.parametrize("version", VERSIONS)
def test_imported_study_survives_migration(tmp_path, version):
    store = _open_copy(tmp_path, version)
    studies = store.studies()
    assert len(studies) == 1
    volumes = store.volumes(studies[0].study_uid)
    assert sorted(v.kind for v in volumes) == ["composed", "composed", "stack", "stack", "stack", "stack"]
    assert {v.role for v in volumes} == {"STIR", "T1"}


@pytest.mark.parametrize("version", WITH_READS)
def test_reads_survive_migration(tmp_path, version):
    store = _open_copy(tmp_path, version)
    reads = list_reads(store)
    assert reads
    for row in reads:
        read = load_read(store, row["read_id"])
        [lesion] = read.lesions
        assert (lesion.site_id, lesion.side, lesion.comment) == ("femur.distal", "L", "kept across migrations")


def test_reading_study_and_audit_survive_migration(tmp_path):
    from cno_annotate import reading_study as rs
    from cno_annotate.store import audit

    store = _open_copy(tmp_path, 3)
    assert [c.reading_code for c in rs.cases(store, "trial")] == ["CNO-0001"]
    statuses = {(r["reader"], r["status"]) for r in list_reads(store, reading_study="trial")}
    assert statuses == {("dr-a", "submitted"), ("dr-b", "draft"), ("dr-c", "submitted")}
    result = audit.verify(store.db)
    baseline = [e for e in audit.entries(store.db, 10_000) if e["action"] == "baseline"]
    assert {e["entity"].split(":")[0] for e in baseline} == {"read", "reading-study"}  # each object's state, once
    migrated = [e for e in audit.entries(store.db, 10_000) if e["action"] == "migrate"]
    assert {e["entity"] for e in migrated} == {f"read:{r['read_id']}" for r in list_reads(store)}  # UIDs given
    assert result.ok and result.entries == 16 + len(baseline) + len(migrated), result
    assert result.objects == len(baseline), result


@pytest.mark.parametrize("version", WITH_READS)
def test_migration_gives_every_lesion_a_tracking_uid_kept_by_later_versions(tmp_path, version):
    from cno_annotate.uids import is_uid

    store = _open_copy(tmp_path, version)
    reads = {r["read_id"]: load_read(store, r["read_id"]) for r in list_reads(store)}
    uids = {rid: [l.tracking_uid for l in read.lesions] for rid, read in reads.items()}
    assert all(is_uid(uid) for found in uids.values() for uid in found)
    for read in reads.values():
        if read.supersedes:  # a later version's lesion is the same lesion as in the version it copies
            assert uids[read.read_id] == uids[read.supersedes]
    first = {rid: u for rid, u in uids.items() if not reads[rid].supersedes}
    assert len({u for found in first.values() for u in found}) == sum(map(len, first.values()))
    again = Store.open(store.root)  # stable: opening again changes nothing
    assert {rid: [l.tracking_uid for l in load_read(again, rid).lesions] for rid in reads} == uids


@pytest.mark.parametrize("version", WITH_GRADED_READS)
def test_graded_reads_rois_unit_marks_reading_times_and_audit_survive_migration(tmp_path, version):
    """Each release's reading study keeps every part of a read that release could store, and the audit verifies."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import stored_reading_time
    from cno_annotate.store import audit

    before = sqlite3.connect(LEGACY / f"store-v{version}.sqlite")
    try:
        entries_before = before.execute("SELECT count(*) FROM audit").fetchone()[0]
    finally:
        before.close()
    store = _open_copy(tmp_path, version)
    assert [c.reading_code for c in rs.cases(store, "trial")] == ["CNO-0001"]
    reads = {r["reader"]: load_read(store, r["read_id"]) for r in list_reads(store, reading_study="trial")}
    assert {reader: read.status for reader, read in reads.items()} == {
        "dr-a": "submitted", "dr-b": "draft", "dr-c": "submitted"}
    assert reads["dr-c"].role == "adjudicator"
    for read in reads.values():
        [lesion] = read.lesions
        assert (lesion.site_id, lesion.side, lesion.grades) == ("femur.distal", "L", {"marrow_hyperintensity": 2})
        assert read.unit_marks == {"toe_phalanges:L": "no_lesion"}
        assert [(roi.kind, roi.plane) for roi in read.rois] == (
            [("rectangle", "coronal")] if version >= FIRST_WITH_ROIS else [])
        expected_time = 95.5 if version >= FIRST_WITH_READING_TIME else 0.0
        assert stored_reading_time(store.db, read.read_id) == pytest.approx(expected_time)
    result = audit.verify(store.db)
    assert result.ok and not result.problems, result
    assert result.entries >= entries_before, result

"""Damaged, empty, newer, read-only stores and lost write-ahead logs: refused clearly, nothing touched."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.errors import CnoError, StoreWriteError
from cno_annotate.store import Store, audit
from cno_annotate.store import db as store_db
from cno_annotate.store.sqlite import migrate

REPO = Path(__file__).resolve().parents[1]
STUDY = "1.2.826.0.1.3680043.99.6"


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file of a folder with the hash of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _closed_store(path: Path, lesions: int = 3) -> Path:
    store = Store.open(path)
    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    for n in range(lesions):
        session.add_lesion((n, 0.0, 0.0), "1.2.3", (n, 0, 0), comment="x" * 3000)
    store.close()
    return path


def test_an_empty_store_file_is_refused_not_made_a_new_store(tmp_path, cli):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.sqlite").write_bytes(b"")
    with pytest.raises(CnoError, match="empty file .*restore it from a backup"):
        Store.open(tmp_path / "store")
    code, _, err = cli("studies", "--store", tmp_path / "store")
    assert code == 1 and err.count("\n") == 1 and "empty file" in err
    assert _snapshot(tmp_path / "store") == {"store.sqlite": hashlib.sha256(b"").hexdigest()}


def test_a_newer_store_is_refused_before_anything_is_written(tmp_path):
    root = _closed_store(tmp_path / "store")
    connection = sqlite3.connect(root / "store.sqlite")
    connection.execute("PRAGMA journal_mode=DELETE")  # as a future program might leave it
    connection.execute(f"PRAGMA user_version = {store_db.SCHEMA_VERSION + 1}")
    connection.close()
    before = _snapshot(root)
    with pytest.raises(CnoError, match="update cno-annotate"):
        Store.open(root)
    assert _snapshot(root) == before  # no WAL conversion, no -wal / -shm files
    assert sqlite3.connect(root / "store.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_damaged_store_is_refused_in_one_line_and_store_check_names_the_damage(tmp_path, cli):
    root = _closed_store(tmp_path / "store", lesions=12)
    data = bytearray((root / "store.sqlite").read_bytes())
    page = 4096
    pages = len(data) // page
    for n in range(2, pages):  # an impossible cell count in every page header after the schema
        data[n * page + 3: n * page + 5] = b"\xff\xff"
    (root / "store.sqlite").write_bytes(bytes(data))
    before = _snapshot(root)
    with pytest.raises(CnoError, match="is damaged"):
        Store.open(root)
    code, _, err = cli("studies", "--store", root)
    assert code == 1 and "damaged" in err and "Traceback" not in err and err.count("\n") == 1
    code, out, err = cli("store", "check", "--store", root)
    assert code == 1 and "integrity:" in out and "damaged" in err
    assert _snapshot(root) == before


def test_a_truncated_store_is_refused_untouched(tmp_path):
    root = _closed_store(tmp_path / "store", lesions=12)
    data = (root / "store.sqlite").read_bytes()
    (root / "store.sqlite").write_bytes(data[: len(data) // 2])
    before = _snapshot(root)
    with pytest.raises(CnoError, match="truncated"):
        Store.open(root)
    assert _snapshot(root) == before


def test_a_store_on_read_only_media_opens_for_reading(tmp_path, monkeypatch, cli):
    root = _closed_store(tmp_path / "store")
    monkeypatch.setattr(store_db, "writable", lambda path: False)  # what os.access says on read-only media
    store = Store.open(root)
    assert store.read_only
    read_id = store.db.execute("SELECT read_id FROM reads").fetchone()[0]
    assert len(load_read(store, read_id).lesions) == 3
    assert audit.verify(store.db).ok
    with pytest.raises(StoreWriteError, match="read-only"):
        ReadSession.open(store, read_id).add_lesion((0.0, 0.0, 0.0), "1.2.3", (0, 0, 0))
    code, out, _ = cli("audit", "verify", "--store", root)
    assert code == 0 and "1 read or reading study matches" in out


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cno_annotate.store import Store
    from cno_annotate.annotation.reads import ReadSession
    store = Store.open(sys.argv[1])
    session = ReadSession.open_or_create(store, "1.2.3", "dr-wal")
    for n in range(5):
        session.add_lesion((n, 0, 0), "1.2.3", (n, 0, 0))
    print("committed 5", flush=True)
    sys.stdin.readline()  # the WAL file is deleted now
    for n in range(5):
        session.add_lesion((n, 0, 0), "1.2.3", (n, 0, 0))
    print("committed 10", flush=True)
    time.sleep(60)
""")


def _writer(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)


def test_a_deleted_wal_then_a_crash_is_found_at_open_not_served_silently(tmp_path):
    root = tmp_path / "store"
    Store.open(root).close()
    child = _writer(root)
    assert child.stdout.readline().strip() == "committed 5"
    (root / "store.sqlite-wal").unlink()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = _snapshot(root)
    with pytest.raises(CnoError, match="lost committed changes.*write-ahead log"):
        Store.open(root)
    assert _snapshot(root) == before


def test_edits_after_the_wal_was_deleted_are_saved_into_the_store(tmp_path):
    root = tmp_path / "store"
    Store.open(root).close()
    child = _writer(root)
    assert child.stdout.readline().strip() == "committed 5"
    (root / "store.sqlite-wal").unlink()
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "committed 10"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = Store.open(root)
    read_id = store.db.execute("SELECT read_id FROM reads").fetchone()[0]
    assert len(load_read(store, read_id).lesions) == 10  # the first five too, though their log was deleted
    assert audit.verify(store.db).ok


def test_an_old_store_is_migrated_once_its_empty_duplicate_drafts_removed_and_its_data_audited(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    old = sqlite3.connect(root / "store.sqlite", isolation_level=None)
    migrate(old, store_db.MIGRATIONS[:3])
    row = ("{id}", STUDY, "dr-a", "rai-cromris", "1.0.0", "cno-sites-1.0.0", "draft", "{t}", None, "{t}", 0, 1,
           None, "reader", 1, None, None)
    for read_id, started in (("first", "2026-01-01"), ("again", "2026-01-02")):
        old.execute("INSERT INTO reads VALUES (" + ",".join("?" * len(row)) + ")",
                    [read_id if v == "{id}" else started if v == "{t}" else v for v in row])
    old.execute("INSERT INTO lesions VALUES ('first', 'L1', 0, ?)",
                ('{"lesion_id": "L1", "position": [0, 0, 0], "series_uid": "1.2.3", "voxel": [0, 0, 0]}',))
    old.close()
    store = Store.open(root)
    assert store.schema_version == store_db.SCHEMA_VERSION
    assert [r[0] for r in store.db.execute("SELECT read_id FROM reads")] == ["first"]
    actions = [(e["action"], e["entity"]) for e in audit.entries(store.db)]
    # schema 10 gives the lesions of read 'first' tracking UIDs, audited
    assert actions == [("delete", "read:again"), ("baseline", "read:first"), ("migrate", "read:first")]
    assert audit.verify(store.db).ok


def test_an_import_that_stops_on_a_full_disk_says_what_it_kept(tmp_path, small_study, monkeypatch):
    """The second batch of images cannot be written: the message counts the images already saved."""
    from cno_annotate import importer

    store = Store.open(tmp_path / "store")
    monkeypatch.setattr(importer, "_BATCH", 4)
    real = importer._flush
    calls = []

    def full_disk_after_one_batch(store_, pending):
        calls.append(len(pending.records))
        if len(calls) == 2:
            raise StoreWriteError(f"the store at {store_.root} could not be written (database or disk is full); "
                                  f"nothing was changed", "database or disk is full")
        real(store_, pending)

    monkeypatch.setattr(importer, "_flush", full_disk_after_one_batch)
    with pytest.raises(StoreWriteError) as refused:
        importer.import_paths(store, [small_study])
    message = str(refused.value)
    saved = store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert saved == calls[0] > 0
    assert f"saving {saved} images" in message and "nothing was changed" not in message


def test_store_check_on_a_newer_store_says_update_and_never_restore(tmp_path, cli):
    root = _closed_store(tmp_path / "store")
    connection = sqlite3.connect(root / "store.sqlite")
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    before = _snapshot(root)
    code, out, err = cli("store", "check", "--store", root)
    assert code == 1 and "newer than this program" in err and "update cno-annotate" in err
    assert "backup" not in out + err and "damaged" not in out + err and err.count("\n") == 1
    assert _snapshot(root) == before


def test_store_check_on_an_empty_store_file_names_it_precisely(tmp_path, cli):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.sqlite").write_bytes(b"")
    code, out, err = cli("store", "check", "--store", tmp_path / "store")
    assert code == 1 and err.count("\n") == 1 and "empty file (0 bytes)" in err
    assert "problems listed" not in err and not out


def test_a_multi_line_damage_report_from_sqlite_is_one_line(tmp_path, cli):
    root = _closed_store(tmp_path / "store", lesions=12)
    data = bytearray((root / "store.sqlite").read_bytes())
    data[2 * 4096: 2 * 4096 + 4] = b"\x00\x00\xff\xff"  # SQLite reports "*** in database main ***\nPage 3: ..."
    (root / "store.sqlite").write_bytes(bytes(data))
    with pytest.raises(CnoError, match="is damaged") as refused:
        Store.open(root)
    assert "\n" not in str(refused.value)
    code, _, err = cli("studies", "--store", root)
    assert code == 1 and err.count("\n") == 1 and "damaged" in err
    code, out, err = cli("store", "check", "--store", root)
    assert code == 1 and all(line.startswith("integrity: ") for line in out.splitlines()) and out

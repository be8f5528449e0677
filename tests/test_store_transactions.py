"""Store transactions are all or nothing, also when the process dies in the middle of one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cno_annotate.store.db import Store

STORE_BACKENDS = ("sqlite", "postgresql")

REPO = Path(__file__).resolve().parents[1]


def test_a_transaction_that_fails_applies_nothing(store):
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("INSERT INTO role_overrides VALUES ('vol-a', 'T1', 'now')")
        raise RuntimeError("fails half way")
    assert store.db.execute("SELECT COUNT(*) FROM role_overrides").fetchone()[0] == 0
    with store.transaction() as db:  # the connection is usable afterwards
        db.execute("INSERT INTO role_overrides VALUES ('vol-b', 'T1', 'now')")
    assert [tuple(r) for r in store.db.execute("SELECT volume_id FROM role_overrides")] == [("vol-b",)]


def test_other_connections_see_a_transaction_only_once_it_commits(store, other_connection):
    other = other_connection(store)
    with store.transaction() as db:
        db.execute("INSERT INTO role_overrides VALUES ('vol-a', 'T1', 'now')")
        assert other.execute("SELECT COUNT(*) FROM role_overrides").fetchone()[0] == 0
    assert other.execute("SELECT COUNT(*) FROM role_overrides").fetchone()[0] == 1


CRASH_BETWEEN_DATA_AND_AUDIT = textwrap.dedent("""
    import os, sys
    from cno_annotate.store.db import Store
    from cno_annotate.store import audit
    from cno_annotate.annotation.reads import ReadSession
    store = Store.open(sys.argv[1])
    session = ReadSession.open(store, sys.argv[2], "dr-a")
    lesion = session.read.lesions[0].lesion_id
    def die(*args, **kwargs):
        os._exit(9)  # as SIGKILL would: after the lesion row was written, before the audit entry
    audit.append = die
    session.update_lesion(lesion, comment="half written")
""")


#: On a server the edit is one statement: the process is killed while the server applies it, held on the audit
#: chain's lock (the lesion row written, the audit entry not yet) by the test.
EDIT_ON_A_SERVER = textwrap.dedent("""
    import sys
    from cno_annotate.store.db import Store
    from cno_annotate.annotation.reads import ReadSession
    store = Store.open(sys.argv[1])
    session = ReadSession.open(store, sys.argv[2], "dr-a")
    print(store.pg.backend_pid, flush=True)
    sys.stdin.readline()
    session.update_lesion(session.read.lesions[0].lesion_id, comment="half written")
""")


def _kill_while_the_server_applies_the_edit(store, read_id: str) -> None:
    """Run the edit in another process, hold it inside the server's edit, SIGKILL the process, let the server go on."""
    import signal
    import time

    from cno_annotate.store.postgres import PgConnection

    owner = PgConnection(store.url)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", EDIT_ON_A_SERVER, store.url, read_id], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        pid = int(proc.stdout.readline())
        owner.execute("BEGIN")
        owner.execute("SELECT seq FROM audit_heads WHERE entity = ? FOR UPDATE", (f"read:{read_id}",))
        proc.stdin.write("go\n")
        proc.stdin.flush()
        for _ in range(400):
            row = owner.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = ?", (pid,)).fetchone()
            if row is not None and row[0] == "Lock":
                break
            time.sleep(0.025)
        else:
            raise AssertionError("the edit never reached the audit chain")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        owner.execute("ROLLBACK")
        owner.close()
        if proc.poll() is None:
            proc.kill()


def test_a_process_killed_inside_an_edit_leaves_no_half_written_edit(store, small_study):
    from cno_annotate.annotation.reads import ReadSession, load_read
    from cno_annotate.importer import import_paths
    from cno_annotate.store import audit

    import_paths(store, [small_study])
    study = store.studies()[0].study_uid
    series = next(v.series_uid for v in store.volumes(study) if v.series_uid)
    session = ReadSession.open_or_create(store, study, "dr-a")
    session.add_lesion((1.0, 2.0, 3.0), series, (0, 0, 0), comment="as committed")
    read_id = session.read.read_id
    entries = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    store.close()
    if store.folder is None:
        _kill_while_the_server_applies_the_edit(store, read_id)
    else:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-c", CRASH_BETWEEN_DATA_AND_AUDIT, str(store.root), read_id],
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 9, proc.stderr
    reopened = Store.open(store.url if store.folder is None else store.root)
    comments = [lesion.comment for lesion in load_read(reopened, read_id).lesions]
    added = reopened.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] - entries
    # Whole or not at all: the edit with its one audit entry (a server finishes a statement whose client died),
    # or neither; never the lesion without its entry.
    assert (comments, added) in ((["as committed"], 0), (["half written"], 1))
    if store.folder is not None:
        assert (comments, added) == (["as committed"], 0)  # the process died before its commit
    assert audit.verify(reopened.db).ok


KILLED_BEFORE_THE_LAST_COMMIT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import cno_annotate.importer as importer
    from cno_annotate.store.db import Store

    store = Store.open(Path(sys.argv[1]))
    importer.rebuild_volumes = lambda store, studies: os._exit(9)  # after the image batches' commits
    importer.import_paths(store, [Path(sys.argv[2])])
    """
)


def test_an_import_killed_before_its_last_commit_keeps_its_committed_batches(tmp_path, small_study):
    """Batches are committed without a flush each (synchronous=NORMAL): a crash of the program keeps them."""
    root = tmp_path / "store"
    Store.open(root).close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLED_BEFORE_THE_LAST_COMMIT, str(root), str(small_study)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    reopened = Store.open(root)
    files = [p for p in small_study.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert reopened.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == len(files)


def test_after_an_import_commits_are_flushed_one_by_one_again(tmp_path, small_study):
    from cno_annotate.importer import import_paths

    store = Store.open(tmp_path / "store")
    import_paths(store, [small_study])
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

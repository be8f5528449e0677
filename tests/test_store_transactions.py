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


def test_a_process_killed_inside_an_edit_leaves_no_half_written_edit(store, small_study):
    from cno_annotate.annotation.reads import ReadSession, load_read
    from cno_annotate.importer import import_paths
    from cno_annotate.store import audit

    import_paths(store, [small_study])
    study = store.studies()[0]["study_uid"]
    series = next(v["series_uid"] for v in store.volumes(study) if v["series_uid"])
    session = ReadSession.open_or_create(store, study, "dr-a")
    session.add_lesion((1.0, 2.0, 3.0), series, (0, 0, 0), comment="as committed")
    read_id = session.read.read_id
    entries = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    store.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CRASH_BETWEEN_DATA_AND_AUDIT, str(store.root), read_id],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    reopened = Store.open(store.root)
    assert [lesion.comment for lesion in load_read(reopened, read_id).lesions] == ["as committed"]
    assert reopened.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == entries
    assert audit.verify(reopened.db).ok

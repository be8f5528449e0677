"""The database keeps one instance per file: a path never holds two SOPInstanceUIDs (issue 11 trial, defect 1)."""

from __future__ import annotations

import pytest

from cno_annotate.importer import import_paths
from tests.conftest import integrity_error

STORE_BACKENDS = ("sqlite", "postgresql")


def test_a_second_instance_on_one_file_is_refused_by_the_database(small_study, store):
    import_paths(store, [small_study])
    (a, path), (b, _) = store.db.execute(
        "SELECT sop_uid, path FROM images WHERE frame = 0 ORDER BY sop_uid LIMIT 2").fetchall()
    with pytest.raises(integrity_error(store), match="one instance"):
        with store.transaction() as db:
            db.execute("UPDATE images SET path = ? WHERE sop_uid = ?", (path, b))
    row = store.db.execute("SELECT * FROM images WHERE sop_uid = ?", (a,)).fetchone()
    with pytest.raises(integrity_error(store), match="one instance"):
        with store.transaction() as db:
            db.execute(f"INSERT INTO images VALUES ({','.join('?' * len(row))})", ("1.2.3.4", *tuple(row)[1:]))
    assert store.db.execute("SELECT COUNT(DISTINCT sop_uid) FROM images WHERE path = ?", (path,)).fetchone()[0] == 1

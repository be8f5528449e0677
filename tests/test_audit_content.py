"""The audit trail records what changed and its hashes cover the content, not only the header."""

from __future__ import annotations

import json

import pytest

from cno_annotate.annotation.reads import ReadSession
from cno_annotate.importer import import_paths
from cno_annotate.store import audit

STORE_BACKENDS = ("sqlite", "postgresql")


def _submitted_read(store, small_study):
    import_paths(store, [small_study])
    study = store.studies()[0].study_uid
    series = next(v.series_uid for v in store.volumes(study) if v.series_uid)
    session = ReadSession.open_or_create(store, study, "dr-a")
    lesion = session.add_lesion((1.0, 2.0, 3.0), series, (0, 0, 0))
    session.update_lesion(lesion, site_id="femur.distal", side="L")
    session.submit()
    return session.read.read_id


def test_a_new_version_is_audited_with_the_read_it_replaces(store, small_study):
    old = _submitted_read(store, small_study)
    new = ReadSession.new_version(store, old, "dr-a", "missed a lesion").read.read_id
    rows = store.db.execute("SELECT actor, action, entity, detail FROM audit WHERE action = 'new-version'").fetchall()
    assert len(rows) == 1
    actor, _, entity, detail = rows[0]
    detail = json.loads(detail)
    assert (actor, entity) == ("dr-a", f"read:{new}")
    assert detail["before"] == {"read_id": old} and detail["reason"] == "missed a lesion"


@pytest.mark.sqlite_only  # on PostgreSQL the server refuses the UPDATE itself (test_postgres_store.py)
def test_changing_the_recorded_state_of_an_entry_breaks_the_chain(store, small_study):
    _submitted_read(store, small_study)
    assert audit.verify(store.db).ok
    seq, detail = store.db.execute(
        "SELECT seq, detail FROM audit WHERE detail LIKE '%\"after\": {%' ORDER BY seq LIMIT 1").fetchone()
    forged = json.loads(detail)
    forged["after"] = {"forged": True}
    store.db.execute("UPDATE audit SET detail = ? WHERE seq = ?", (json.dumps(forged, sort_keys=True), seq))
    result = audit.verify(store.db)
    assert not result.ok and result.broken_at == seq


def test_audit_show_lists_the_newest_entries_oldest_first(store, cli):
    """``audit show --last N``: the N newest entries, in the order they happened, every field named."""
    with store.transaction():
        for n in range(25):
            audit.append(store.db, "coordinator", "export", f"file:{n}", after={"n": n})
    code, out, _ = cli("--store", store.root, "audit", "show", "--last", "3", "--json")
    shown = json.loads(out)
    assert code == 0 and [e["entity"] for e in shown] == ["file:22", "file:23", "file:24"]
    assert [e["entity"] for e in audit.entries(store.db)] == [f"file:{n}" for n in range(5, 25)]  # 20 by default
    assert [e["seq"] for e in shown] == sorted(e["seq"] for e in shown)
    assert set(shown[0]) == {"seq", "at", "actor", "action", "entity", "detail"}
    assert shown[-1]["at"] and shown[-1]["actor"] == "coordinator" and shown[-1]["detail"]["after"] == {"n": 24}
    code, out, _ = cli("--store", store.root, "audit", "show")
    assert len(out.splitlines()) == 20 and out.splitlines()[-1].split()[-1] == "file:24"

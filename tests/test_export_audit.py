"""Exports and reports refuse a read that ``audit verify`` finds changed outside the program.

Someone edits a submitted read's lesion grade with raw SQL (SQLite: a shell that drops the lock
triggers; PostgreSQL: the tables' owner, who can switch off their triggers). Every export of
that read then stops with one line naming it and writes nothing; exports of the other reads
still work; a cohort report is refused unless ``--include-tampered`` is given, and then names it.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.importer import import_paths
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.store import Store
from cno_annotate.store.catalog import VolumeRow
from tests.cli_run import run_cli

STORE_BACKENDS = ("sqlite", "postgresql")
BACKEND_FIXTURES = ("trial",)
GRADE = "UPDATE lesions SET data = replace(data, '\"marrow_hyperintensity\": 2', '\"marrow_hyperintensity\": 0') " \
        "WHERE read_id = ?"


@pytest.fixture
def trial(request, tmp_path, small_study) -> Store:
    """Reading study 'trial' on one imported study: dr-a and dr-b each submitted a read with one lesion."""
    if getattr(request, "param", "sqlite") == "postgresql":
        store = Store.open(request.getfixturevalue("pg_database")())
    else:
        store = Store.open(tmp_path / "store")
    import_paths(store, [small_study])
    uid = store.studies()[0].study_uid
    stack = next(v for v in store.volumes(uid) if v.kind == VolumeKind.STACK)
    rs.create(store, "trial")
    rs.add_cases(store, "trial", [uid])
    rs.add_readers(store, "trial", ["dr-a", "dr-b"])
    rs.assign(store, "trial")
    for reader in ("dr-a", "dr-b"):
        session = ReadSession.open_or_create(store, uid, reader, reading_study="trial")
        lesion = session.add_lesion(_inside(store, stack), stack.volume_id, (1, 2, 3),
                                    site_id="femur.distal", side="R",
                                    extent={"kind": "box", "min_mm": [-5, -5, -5], "max_mm": [5, 5, 5]})
        session.set_grade(lesion, "marrow_hyperintensity", 2)
        session.submit()
    yield store
    store.close()


def _inside(store: Store, stack: VolumeRow) -> tuple[float, float, float]:
    """A position in the middle of the stack's grid (LPS mm)."""
    from cno_annotate.exchange.stations import Stations

    station = Stations(store).get(stack.volume_id)
    k, j, i = station.shape
    return tuple(float(v) for v in (station.affine @ [i / 2, j / 2, k / 2, 1.0])[:3])  # type: ignore[return-value]


def _read_id(store: Store, reader: str) -> str:
    return store.db.execute("SELECT read_id FROM reads WHERE reader = ?", (reader,)).fetchone()[0]


#: The read's latest audit entry made to record the state the read has after GRADE (its hash is left as it was).
COVER = "UPDATE audit SET detail = ? WHERE seq = (SELECT MAX(seq) FROM audit WHERE entity = ?)"


def _tamper(store: Store, read_id: str, cover: bool = False) -> None:
    """Lower the grade of the read's lesion behind the program's back; with ``cover``, also rewrite the state its
    latest audit entry recorded to match (the entry's hash, and so its chain, then no longer verify)."""
    if store.folder is None:
        from cno_annotate.store.postgres import PgConnection

        owner = PgConnection(store.url)
        try:
            with owner.transaction() as db:
                db.execute("ALTER TABLE lesions DISABLE TRIGGER USER")
                db.execute(GRADE, (read_id,))
                db.execute("ALTER TABLE lesions ENABLE TRIGGER USER")
                if cover:
                    db.execute("ALTER TABLE audit DISABLE TRIGGER USER")
                    db.execute(COVER, (_covering(db, read_id), f"read:{read_id}"))
                    db.execute("ALTER TABLE audit ENABLE TRIGGER USER")
        finally:
            owner.close()
        return
    db = sqlite3.connect(store.root / "store.sqlite", isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute(GRADE, (read_id,))
    if cover:
        db.execute(COVER, (_covering(db, read_id), f"read:{read_id}"))
    db.close()


def _covering(db, read_id: str) -> str:
    """The detail of the read's latest entry with the state the read has now."""
    from cno_annotate.store import audit

    (detail,) = db.execute("SELECT detail FROM audit WHERE entity = ? ORDER BY seq DESC LIMIT 1",
                           (f"read:{read_id}",)).fetchone()
    return json.dumps({**json.loads(detail), "state": audit.read_state(db, read_id)})


def _exports(tmp_path, store: Store, reader: str | None) -> dict[str, list]:
    """Every export command of reads, restricted to ``reader`` (None: all), writing under ``tmp_path``."""
    only = ["--reader", reader] if reader else []
    key = tmp_path.parent / "key.sqlite"
    return {
        "read export": ["read", "export", *only, "--out", tmp_path / "reads.json"],
        "export-csv": ["export-csv", *only, "--out", tmp_path / "csv"],
        "export-sr": ["read", "export-sr", *only, "--out", tmp_path / "sr"],
        "export-seg": ["read", "export-seg", *only, "--out", tmp_path / "seg"],
        "reader export": ["reading-study", "export", "trial", "--reader", reader or "dr-a",
                          "--out", tmp_path / "mine.json"],
        "export-unblinded": ["reading-study", "export-unblinded", "trial", "--link-key", key,
                             "--out", tmp_path / "unblinded"],
    }


def test_every_export_of_a_changed_read_is_refused_in_one_line_naming_it(trial, tmp_path):
    assert run_cli("link", "from-patient-ids", "trial", "--link-key", tmp_path / "key.sqlite", "--store",
                   trial.root)[0] == 0
    changed = _read_id(trial, "dr-a")
    _tamper(trial, changed)
    refused = tmp_path / "refused"
    refused.mkdir()
    for name, args in _exports(refused, trial, None).items():
        code, out = run_cli(*args, "--store", trial.root)
        assert code != 0, f"{name} exported a changed read: {out}"
        lines = out.strip().splitlines()
        assert len(lines) == 1 and changed in lines[0] and "changed outside the program" in lines[0], (name, out)
        assert not [p for p in refused.rglob("*") if p.is_file()], f"{name} left files"
    (tmp_path / "other").mkdir()
    for name, args in _exports(tmp_path / "other", trial, "dr-b").items():
        if name == "export-unblinded":
            continue  # every read of the study: refused above
        code, out = run_cli(*args, "--store", trial.root)
        assert code == 0, f"{name} of dr-b's read: {out}"


def test_a_read_whose_audit_chain_does_not_verify_is_refused_by_every_export_and_by_reports(trial, tmp_path):
    """The read and its latest entry's recorded state both rewritten: the state matches, the chain does not."""
    assert run_cli("link", "from-patient-ids", "trial", "--link-key", tmp_path / "key.sqlite", "--store",
                   trial.root)[0] == 0
    changed = _read_id(trial, "dr-a")
    _tamper(trial, changed, cover=True)
    refused = tmp_path / "refused"
    refused.mkdir()
    for name, args in _exports(refused, trial, None).items():
        code, out = run_cli(*args, "--store", trial.root)
        assert code != 0, f"{name} exported a read whose audit chain does not verify: {out}"
        lines = out.strip().splitlines()
        assert len(lines) == 1 and changed in lines[0] and "changed outside the program" in lines[0], (name, out)
        assert not [p for p in refused.rglob("*") if p.is_file()], f"{name} left files"
    code, out = run_cli("report", "agreement", "trial", "--bootstrap", "0", "--out", tmp_path / "r", "--store",
                        trial.root)
    assert code != 0 and changed in out and "--include-tampered" in out, out
    code, out = run_cli("read", "export", "--reader", "dr-b", "--out", tmp_path / "b.json", "--store", trial.root)
    assert code == 0, out  # the other reader's read, on its own intact chain


def test_a_report_with_a_changed_read_is_refused_unless_asked_and_then_names_it(trial, tmp_path):
    changed = _read_id(trial, "dr-b")
    _tamper(trial, changed)
    code, out = run_cli("report", "agreement", "trial", "--bootstrap", "0", "--out", tmp_path / "r", "--store",
                        trial.root)
    assert code != 0 and changed in out and "--include-tampered" in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "report.json").exists()
    code, out = run_cli("report", "agreement", "trial", "--bootstrap", "0", "--include-tampered",
                        "--out", tmp_path / "r", "--store", trial.root)
    assert code == 0, out
    assert changed in out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["reads_changed_outside_the_program"] == [changed]
    assert changed in (tmp_path / "r" / "report.html").read_text()  # the reader of the report sees it too


def test_untouched_reads_export_and_report_as_before(trial, tmp_path):
    for name, args in _exports(tmp_path, trial, None).items():
        if name == "export-unblinded":
            continue
        code, out = run_cli(*args, "--store", trial.root)
        assert code == 0, f"{name}: {out}"
    code, out = run_cli("report", "agreement", "trial", "--bootstrap", "0", "--out", tmp_path / "r", "--store",
                        trial.root)
    assert code == 0, out
    assert json.loads((tmp_path / "r" / "report.json").read_text())["reads_changed_outside_the_program"] == []


def test_a_read_audited_before_and_after_the_per_object_chains_exports(tmp_path):
    """A store made before schema 22 (one chain for all entries), migrated, and a read edited since: its entries
    before and after verify, so the per-export check of its chain does not refuse it."""
    import shutil
    from pathlib import Path

    from cno_annotate.export_reads import unaudited_reads
    from cno_annotate.store import audit

    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "legacy_stores" / "store-v17.sqlite", folder / "store.sqlite")
    store = Store.open(folder)
    try:
        draft = store.db.execute("SELECT read_id FROM reads WHERE status = 'draft'").fetchone()[0]
        session = ReadSession.open(store, draft)
        session.mark_unit("spine.L5", "no_lesion")
        session.mark_unit("spine.L4", "no_lesion")
        entries = store.db.execute("SELECT prev_seq FROM audit WHERE entity = ? ORDER BY seq",
                                   (f"read:{draft}",)).fetchall()
        assert entries[0][0] is None and entries[-1][0] is not None  # both kinds of entry on this read
        assert audit.verify(store.db).ok
        assert unaudited_reads(store, [r[0] for r in store.db.execute("SELECT read_id FROM reads")]) == []
    finally:
        store.close()

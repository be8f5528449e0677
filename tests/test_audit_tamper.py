"""Tamper evidence that covers the data: direct changes to the database are found, an anchor finds a rewritten chain."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.errors import CnoError
from cno_annotate.store import Store, audit
from cno_annotate.store.audit import _digest

SERIES = "1.2.3"


@pytest.fixture
def trial(sample_store, tmp_path) -> Store:
    """A reading study with one case, two readers, a submitted read and a draft with a unit mark."""
    shutil.copytree(sample_store.root, tmp_path / "store")
    store = Store.open(tmp_path / "store")
    uid = store.studies()[0].study_uid
    rs.create(store, "trial", show_age_sex=True)
    rs.add_cases(store, "trial", [uid])
    rs.add_readers(store, "trial", ["dr-a", "dr-b"])
    rs.assign(store, "trial")
    for reader in ("dr-a", "dr-b"):
        session = ReadSession.open_or_create(store, uid, reader, reading_study="trial")
        session.add_lesion((1.0, 2.0, 3.0), SERIES, (1, 2, 3), site_id="femur.distal", side="R",
                           grades={"marrow_hyperintensity": 2})
        session.mark_unit("spine.L5", "no_lesion")
        if reader == "dr-a":
            session.submit()
    return store


def _attacker(store: Store) -> sqlite3.Connection:
    """Someone with write access to the file and an SQLite shell: the lock triggers are dropped first."""
    db = sqlite3.connect(store.root / "store.sqlite", isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    return db


def _read_id(store: Store, reader: str) -> str:
    return store.db.execute("SELECT read_id FROM reads WHERE reader = ?", (reader,)).fetchone()[0]


#: Eight direct changes to the data, as (name, entity kind, SQL with the target's read id or study name).
TAMPERS = [
    ("lesion grade", "read", "UPDATE lesions SET data = replace(data, '\"marrow_hyperintensity\": 2', "
                             "'\"marrow_hyperintensity\": 0') WHERE read_id = :a"),
    ("lesion deleted", "read", "DELETE FROM lesions WHERE read_id = :a"),
    ("status", "read", "UPDATE reads SET status = 'draft', submitted = NULL WHERE read_id = :a"),
    ("reader", "read", "UPDATE reads SET reader = 'dr-z' WHERE read_id = :a"),
    ("unit mark", "read", "UPDATE unit_marks SET mark = 'not_assessable' WHERE read_id = :b"),
    ("patient", "reading-study", "UPDATE patients SET sex = CASE sex WHEN 'F' THEN 'M' ELSE 'F' END, "
                                 "birth_date = '20100101'"),
    ("reading code", "reading-study", "UPDATE rs_cases SET reading_code = 'CNO-0999'"),
    ("worklist reader", "reading-study", "UPDATE rs_readers SET role = 'adjudicator' WHERE reader = 'dr-b'"),
]


def _tamper(store: Store, sql: str) -> sqlite3.Connection:
    db = _attacker(store)
    db.execute(sql, {"a": _read_id(store, "dr-a"), "b": _read_id(store, "dr-b")})
    return db


def _recompute_chain(db: sqlite3.Connection, entity: str, state: str | None) -> None:
    """The attacker records the forged state in the entity's latest entry and recomputes every hash after it."""
    seq, detail = db.execute("SELECT seq, detail FROM audit WHERE entity = ? ORDER BY seq DESC LIMIT 1",
                             (entity,)).fetchone()
    detail = json.loads(detail)
    detail["state"] = state
    db.execute("UPDATE audit SET detail = ? WHERE seq = ?", (json.dumps(detail, ensure_ascii=False,
                                                                        sort_keys=True), seq))
    _rechain(db, seq)


def _rechain(db: sqlite3.Connection, first: int) -> None:
    """The attacker recomputes the hashes of entry ``first`` and of every entry after it, chain by chain, and the
    recorded ends: what someone who knows how the trail is chained (per object, first entries on the spine) does."""
    spine, ends = (0, audit.GENESIS), {}
    for seq, at, actor, action, entity, detail, prev_hash, digest, prev_seq in db.execute(
            "SELECT seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq FROM audit ORDER BY seq"
    ).fetchall():
        parent = ends[entity] if prev_seq is not None and entity in ends else spine
        if seq >= first:
            prev_seq, prev_hash = (None if prev_seq is None else parent[0]), parent[1]
            digest = _digest(prev_hash, seq, at, actor, action, entity, detail, prev_seq)
            db.execute("UPDATE audit SET prev_seq = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                       (prev_seq, prev_hash, digest, seq))
        if parent is spine:
            spine = (seq, digest)
        if prev_seq is not None:
            ends[entity] = (seq, digest)
    db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", spine)
    for entity, (seq, digest) in ends.items():
        db.execute("UPDATE audit_heads SET seq = ?, hash = ? WHERE entity = ?", (seq, digest, entity))


def test_an_untouched_store_verifies_and_counts_what_it_checked(trial):
    result = audit.verify(trial.db, audit.anchor(trial.db))
    assert result.ok and result.objects == 3  # two reads and one reading study
    assert "3 reads and reading studies match" in result.reason and "anchor matches" in result.reason


@pytest.mark.parametrize("name,kind,sql", TAMPERS, ids=[t[0] for t in TAMPERS])
def test_a_direct_change_to_the_data_is_found(trial, name, kind, sql):
    _tamper(trial, sql).close()
    result = audit.verify(trial.db)
    assert not result.ok and result.broken_at == 0
    assert any(p.startswith(f"{kind}:") and "outside the program" in p for p in result.problems)


@pytest.mark.parametrize("name,kind,sql", TAMPERS, ids=[t[0] for t in TAMPERS])
def test_a_change_hidden_by_recomputing_the_chain_is_found_with_the_anchor(trial, name, kind, sql):
    anchor = audit.anchor(trial.db)
    key = _read_id(trial, "dr-b" if "unit_marks" in sql else "dr-a") if kind == "read" else "trial"
    db = _tamper(trial, sql)
    state = audit.STATES[kind](db, key)
    _recompute_chain(db, f"{kind}:{key}", state)
    db.close()
    assert audit.verify(trial.db).ok  # without the anchor the forgery passes (what the README says)
    result = audit.verify(trial.db, anchor)
    assert not result.ok and "differs from the anchor" in result.reason


def test_wiping_the_trail_and_its_head_is_not_intact(trial):
    db = _attacker(trial)
    db.execute("DELETE FROM audit")
    db.execute("DELETE FROM audit_head")
    db.execute("DELETE FROM audit_heads")
    db.close()
    result = audit.verify(trial.db)
    assert not result.ok and "in no audit entry" in result.reason and len(result.problems) == 3


def test_cli_anchor_and_verify_with_it(trial, cli, tmp_path):
    code, out, _ = cli("audit", "anchor", "--store", trial.root, "--out", tmp_path / "anchor.txt")
    assert code == 0 and out.strip() == (tmp_path / "anchor.txt").read_text().strip()
    code, out, _ = cli("audit", "verify", "--store", trial.root, "--anchor", tmp_path / "anchor.txt")
    assert code == 0 and "anchor matches" in out
    code, _, _ = cli("audit", "verify", "--store", trial.root, "--anchor", (tmp_path / "anchor.txt").read_text())
    assert code == 0  # the anchor line itself works as well as its file
    db = _tamper(trial, TAMPERS[0][2])
    _recompute_chain(db, f"read:{_read_id(trial, 'dr-a')}", audit.read_state(db, _read_id(trial, "dr-a")))
    db.close()
    code, _, err = cli("audit", "verify", "--store", trial.root, "--anchor", tmp_path / "anchor.txt")
    assert code == 1 and "rewritten" in err and "Traceback" not in err
    code, _, err = cli("audit", "verify", "--store", trial.root, "--anchor", "nonsense")
    assert code == 1 and "cannot read the anchor" in err


def test_store_check_runs_the_integrity_check_and_the_audit(trial, cli):
    code, out, _ = cli("store", "check", "--store", trial.root)
    assert code == 0 and "integrity check ok" in out and "3 reads and reading studies match" in out
    _tamper(trial, TAMPERS[3][2]).close()
    code, out, err = cli("store", "check", "--store", trial.root)
    assert code == 1 and "audit: read:" in out and "audit check failed" in err


def _audit_count(store: Store) -> int:
    return store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]


@pytest.mark.parametrize("edit", ["mark", "grade", "submit"])
def test_a_direct_change_is_not_laundered_by_the_next_edit(trial, edit):
    uid = trial.studies()[0].study_uid
    session = ReadSession.open_or_create(trial, uid, "dr-b", reading_study="trial")
    read_id = session.read.read_id
    entries, revision = _audit_count(trial), session.read.revision
    _tamper(trial, "UPDATE lesions SET data = replace(data, '\"marrow_hyperintensity\": 2', "
                   "'\"marrow_hyperintensity\": 0') WHERE read_id = :b").close()
    with pytest.raises(CnoError, match=f"read {read_id} was changed outside the program since its last audited "
                                       f"change; run cno-annotate store check"):
        if edit == "mark":
            session.mark_unit("spine.L4", "no_lesion")
        elif edit == "grade":
            session.set_grade(session.read.lesions[0].lesion_id, "marrow_hyperintensity", 1)
        else:
            session.submit()
    assert _audit_count(trial) == entries  # nothing was written
    assert trial.db.execute("SELECT revision FROM reads WHERE read_id = ?", (read_id,)).fetchone()[0] == revision
    assert not audit.verify(trial.db).ok  # the change is still found


def test_a_reading_study_changed_outside_is_not_laundered_by_the_next_change(trial):
    entries = _audit_count(trial)
    _tamper(trial, "UPDATE rs_cases SET reading_code = 'CNO-0999'").close()
    with pytest.raises(CnoError, match="reading study trial was changed outside the program"):
        rs.add_readers(trial, "trial", ["dr-c"])
    assert _audit_count(trial) == entries
    assert not audit.verify(trial.db).ok


def test_verify_finds_a_gap_between_entries_after_a_later_edit(trial):
    """An entry whose recorded state before the change is not the previous entry's state after it."""
    read_id = _read_id(trial, "dr-b")
    _tamper(trial, "UPDATE unit_marks SET mark = 'not_assessable' WHERE read_id = :b").close()
    with trial.transaction() as db:  # what an older program did: hash whatever is in the store
        seq = audit.append(db, "dr-b", "change", f"read:{read_id}", state_before=audit.read_state(db, read_id))
    result = audit.verify(trial.db)
    assert not result.ok
    assert any(f"read:{read_id}" in p and f"entry {seq}" in p and "outside the program" in p
               for p in result.problems)


def _plain_shell(store: Store) -> sqlite3.Connection:
    """A second program with an SQLite shell that leaves the triggers in place (recursive_triggers off)."""
    return sqlite3.connect(store.root / "store.sqlite", isolation_level=None)


def quote(text: str) -> str:
    """An SQL string literal."""
    return "'" + text + "'"


_COLUMNS = ("read_id, study_uid, reader, scheme_id, scheme_version, taxonomy, status, started, submitted, modified, "
            "revision, next_lesion, reading_study, role, version, supersedes, reason")


@pytest.mark.parametrize("sql", [
    f"INSERT OR REPLACE INTO reads ({_COLUMNS}) SELECT {_COLUMNS.replace('status', quote('draft'))} "
    f"FROM reads WHERE read_id = :a",
    f"REPLACE INTO reads ({_COLUMNS}) SELECT {_COLUMNS.replace('status', quote('draft'))} FROM reads "
    f"WHERE read_id = :a",
    f"INSERT OR REPLACE INTO reads ({_COLUMNS}) SELECT {_COLUMNS.replace('read_id', quote('intruder'))} "
    f"FROM reads WHERE read_id = :a",
    "UPDATE OR REPLACE reads SET read_id = :a WHERE read_id = :b",
], ids=["insert-or-replace", "replace", "same-case", "update-or-replace"])
def test_replacing_a_submitted_read_is_refused_by_the_database(trial, sql):
    submitted = _read_id(trial, "dr-a")
    before = audit.read_state(trial.db, submitted)
    db = _plain_shell(trial)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(sql, {"a": submitted, "b": _read_id(trial, "dr-b")})
    db.close()
    assert audit.read_state(trial.db, submitted) == before
    assert trial.db.execute("SELECT status FROM reads WHERE read_id = ?", (submitted,)).fetchone()[0] == "submitted"
    assert audit.verify(trial.db).ok


@pytest.mark.parametrize("data", ["not json", "null", '{"lesion_id": "L1"}', "[1, 2]"],
                         ids=["not-json", "null", "missing-fields", "list"])
def test_a_damaged_lesion_row_is_one_line_naming_read_and_lesion(trial, cli, tmp_path, data):
    read_id = _read_id(trial, "dr-b")
    lesion_id = trial.db.execute("SELECT lesion_id FROM lesions WHERE read_id = ?", (read_id,)).fetchone()[0]
    db = _plain_shell(trial)
    db.execute("UPDATE lesions SET data = ? WHERE read_id = ?", (data, read_id))
    db.close()
    expected = f"lesion {lesion_id} of read {read_id} is damaged: "
    for command in (("read", "export", "--out", tmp_path / "reads.json"), ("export-csv", "--out", tmp_path / "csv")):
        code, _, err = cli(*command, "--store", trial.root)
        assert code == 1 and expected in err and "run cno-annotate store check" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("store", "check", "--store", trial.root)
    assert code == 1 and expected in out and "Traceback" not in err


def test_importing_a_submitted_read_again_does_not_suggest_replace(trial, tmp_path):
    from cno_annotate.annotation.documents import export_document, import_document, write_document

    path = write_document(export_document(trial), tmp_path / "reads.json")
    submitted = _read_id(trial, "dr-a")
    for replace in (False, True):
        with pytest.raises(CnoError, match=f"read {submitted} is submitted and locked: it cannot be replaced; "
                                           f"submitted reads change only through a new version") as refused:
            import_document(trial, path, replace=replace)
        assert "--replace" not in str(refused.value)


# -- found by stress/mutation_run.py: what verify and the anchor report, exactly ---------------

def test_data_and_anchor_problems_are_reported_together_and_counted(trial):
    entries = trial.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    seq = trial.db.execute("SELECT seq FROM audit_head").fetchone()[0]
    forged_anchor = f"{audit.ANCHOR_PREFIX}:{seq}:{'f' * 64}"
    _tamper(trial, TAMPERS[0][2]).close()
    result = audit.verify(trial.db, forged_anchor)
    assert not result.ok and result.broken_at == 0
    assert result.entries == entries and result.objects == 3
    assert any("outside the program" in p for p in result.problems)
    assert any("differs from the anchor" in p for p in result.problems)
    assert result.reason == f"{result.problems[0]} (and {len(result.problems) - 1} more)"


def test_one_problem_is_reported_without_a_count(trial):
    _tamper(trial, TAMPERS[0][2]).close()
    result = audit.verify(trial.db)
    assert len(result.problems) == 1 and result.reason == result.problems[0]


def test_without_an_anchor_the_report_does_not_claim_one(trial):
    result = audit.verify(trial.db)
    assert result.ok and "anchor" not in result.reason
    assert result.reason.endswith("3 reads and reading studies match their audited state")


def test_a_removed_entry_is_named_with_the_entries_read_so_far(trial):
    db = _attacker(trial)
    db.execute("DELETE FROM audit WHERE seq = 2")
    db.close()
    result = audit.verify(trial.db)
    assert (result.broken_at, result.entries) == (2, 2)
    assert result.reason == "entry 2 is missing (next is 3)"


def test_the_anchor_of_an_empty_trail_is_the_genesis(store):
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
    assert audit.anchor(store.db) == f"{audit.ANCHOR_PREFIX}:0:{audit.GENESIS}"
    assert audit.verify(store.db, audit.anchor(store.db)).ok


def test_an_anchor_on_the_first_entry_catches_its_rewrite(store):
    with store.transaction() as db:
        audit.append(db, "coordinator", "export", "file:a.csv", after={"files": ["a.csv"]})
    anchor = audit.anchor(store.db)
    assert anchor.startswith(f"{audit.ANCHOR_PREFIX}:1:")
    db = sqlite3.connect(store.root / "store.sqlite", isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("UPDATE audit SET detail = replace(detail, 'a.csv', 'b.csv') WHERE seq = 1")
    _rechain(db, 1)
    db.close()
    assert audit.verify(store.db).ok  # the rewritten chain is consistent in itself
    result = audit.verify(store.db, anchor)
    assert not result.ok and "entry 1 differs from the anchor" in result.reason


@pytest.mark.parametrize("text", [
    f"{audit.ANCHOR_PREFIX}:12",  # two parts
    f"other-anchor:12:{'a' * 64}",  # another prefix
    f"{audit.ANCHOR_PREFIX}:x12:{'a' * 64}",  # not a number
    f"{audit.ANCHOR_PREFIX}:12:{'a' * 63}",  # a short hash
    f"{audit.ANCHOR_PREFIX}:12:{'a' * 64}:{'b' * 90}",  # four parts, long
])
def test_text_that_is_not_an_anchor_is_refused_with_what_was_expected(text):
    with pytest.raises(CnoError) as refused:
        audit.parse_anchor(text)
    message = str(refused.value)
    assert message.startswith(f"not an audit anchor: {text[:80]!r} (expected {audit.ANCHOR_PREFIX}:SEQ:HASH")


def test_a_direct_change_to_a_reads_roi_is_found(trial):
    """ROIs (and the lesion:muscle ratio computed from them) are part of the read's audited content."""
    session = ReadSession.open(trial, _read_id(trial, "dr-b"), "dr-b")
    session.add_roi("rectangle", "coronal", [(0.0, 0.0, 0.0), (10.0, 0.0, 10.0)], SERIES)
    assert audit.verify(trial.db).ok
    db = _attacker(trial)
    db.execute("UPDATE rois SET role = 'muscle'")
    db.close()
    result = audit.verify(trial.db)
    assert not result.ok and any(p.startswith("read:") and "outside the program" in p for p in result.problems)


def _latest_entry(store: Store, entity: str) -> int:
    return store.db.execute("SELECT MAX(seq) FROM audit WHERE entity = ?", (entity,)).fetchone()[0]


def _copy_read(db: sqlite3.Connection, read_id: str, new_id: str) -> None:
    """Insert, as a second program would, a read row like ``read_id`` under ``new_id`` (another reader)."""
    cursor = db.execute("SELECT * FROM reads WHERE read_id = ?", (read_id,))
    row = dict(zip([c[0] for c in cursor.description], cursor.fetchone()))
    row.update(read_id=new_id, reader="dr-z")
    db.execute(f"INSERT INTO reads ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))


def test_verify_says_whether_a_read_was_changed_deleted_or_added_and_after_which_entry(trial):
    a, b = _read_id(trial, "dr-a"), _read_id(trial, "dr-b")
    with trial.transaction() as db:  # the program deleted the read 'ghost' (an empty duplicate draft)
        audit.append(db, "cno-annotate", "delete", "read:ghost", state_before=None)
    db = _tamper(trial, TAMPERS[0][2])
    db.execute("DELETE FROM unit_marks WHERE read_id = ?", (b,))
    db.execute("DELETE FROM lesions WHERE read_id = ?", (b,))
    db.execute("DELETE FROM reads WHERE read_id = ?", (b,))
    _copy_read(db, a, "ghost")
    db.close()
    problems = audit.verify(trial.db).problems
    for entity, what in ((f"read:{a}", "was changed"), (f"read:{b}", "was deleted"), ("read:ghost", "was added")):
        assert f"{entity} {what} outside the program after audit entry {_latest_entry(trial, entity)} " \
               f"(its content differs from the audited state)" in problems


def test_a_gap_is_found_after_entries_about_files(trial):
    """Entries about other things (an export's files) do not end the search for gaps."""
    read_id = _read_id(trial, "dr-b")
    with trial.transaction() as db:
        audit.append(db, "coordinator", "export", "file:reads.json", after={"files": ["reads.json"]})
    _tamper(trial, "UPDATE unit_marks SET mark = 'not_assessable' WHERE read_id = :b").close()
    with trial.transaction() as db:  # what an older program did: hash whatever is in the store
        seq = audit.append(db, "dr-b", "change", f"read:{read_id}", state_before=audit.read_state(db, read_id))
    before = trial.db.execute("SELECT MAX(seq) FROM audit WHERE entity = ? AND seq < ?",
                              (f"read:{read_id}", seq)).fetchone()[0]
    assert (f"read:{read_id} was changed outside the program between audit entry {before} and entry {seq} "
            f"(entry {seq} found a state that no entry recorded)") in audit.verify(trial.db).problems


def test_a_read_first_audited_after_it_was_made_outside_the_program_is_a_gap(trial):
    """Its first entry found a state no entry recorded: the message says since when."""
    db = _attacker(trial)
    _copy_read(db, _read_id(trial, "dr-a"), "ghost")
    db.close()
    with trial.transaction() as db:  # an older program audits it as it finds it
        seq = audit.append(db, "dr-z", "change", "read:ghost", state_before=audit.read_state(db, "ghost"))
    assert (f"read:ghost was changed outside the program between it first appeared and entry {seq} "
            f"(entry {seq} found a state that no entry recorded)") in audit.verify(trial.db).problems


def test_a_reading_study_whose_name_holds_a_colon_verifies(trial):
    rs.create(trial, "site:A")
    rs.add_readers(trial, "site:A", ["dr-c"])
    result = audit.verify(trial.db)
    assert result.ok and result.objects == 4, result.problems
    _tamper(trial, "UPDATE rs_readers SET role = 'adjudicator' WHERE reader = 'dr-c'").close()
    assert any(p.startswith("reading-study:site:A was changed outside the program after audit entry")
               for p in audit.verify(trial.db).problems)
    with trial.transaction() as db:  # an older program hid the change in its next entry: a gap
        audit.append(db, "coordinator", "change", "reading-study:site:A",
                     state_before=audit.reading_study_state(db, "site:A"))
    assert any(p.startswith("reading-study:site:A was changed outside the program between audit entry")
               for p in audit.verify(trial.db).problems)


#: A break of the chain (SQL; {f} a forged hash, {n} the last entry), and what verify reports for a chain
#: of n entries: (entries read, the entry named, the reason).
CHAIN_BREAKS = [
    ("UPDATE audit SET prev_hash = '{f}' WHERE seq = 3",
     lambda n: (3, 3, "entry 3 does not follow entry 2 (previous hash differs)")),
    ("UPDATE audit SET actor = 'dr-z' WHERE seq = 2",
     lambda n: (2, 2, "entry 2 was changed after it was written (hash differs)")),
    ("UPDATE audit_heads SET hash = '{f}' WHERE seq = {n}",
     lambda n: (n, n, f"entry {n} does not match the recorded end of the chain")),
    ("DELETE FROM audit WHERE seq = {n}", lambda n: (n - 1, n, f"entry {n} is missing (the chain ends early)")),
    ("DELETE FROM audit_head", lambda n: (n, 1, "the recorded end of the chain is missing")),
]


@pytest.mark.parametrize("sql,expected", CHAIN_BREAKS,
                         ids=["previous hash", "entry hash", "head hash", "last entry removed", "head removed"])
def test_verify_names_the_broken_entry_and_counts_what_it_read(trial, sql, expected):
    n = trial.db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    db = _attacker(trial)
    db.execute(sql.format(f="f" * 64, n=n))
    db.close()
    result = audit.verify(trial.db)
    assert (result.entries, result.broken_at, result.reason) == expected(n)


def test_an_intact_store_says_so_with_its_counts(trial):
    n = trial.db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    assert audit.verify(trial.db, audit.anchor(trial.db)).reason == (
        f"audit chain intact: {n} entries; 3 reads and reading studies match their audited state, anchor matches")
    assert audit.verify(trial.db).reason == (
        f"audit chain intact: {n} entries; 3 reads and reading studies match their audited state")

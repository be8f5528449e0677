"""Reads: edits, undo / redo, locking, JSON and CSV exports, crash safety."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cno_annotate.annotation.documents import export_document, import_document, write_document
from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.errors import CnoError
from cno_annotate.store import Store
from tests.voxels import voxel_at

STUDY = "1.2.826.0.1.3680043.99.1"
STORE_BACKENDS = ("sqlite", "postgresql")


def new_session(store, reader="dr-a", scheme=None) -> ReadSession:
    return ReadSession.open_or_create(store, STUDY, reader, scheme)


def placed(session, site="femur.distal", side="R", series="1.2.3", voxel=(40, 337, 6), **grades) -> str:
    lesion_id = session.add_lesion((-77.0, 0.0, -420.0), series, voxel)
    session.update_lesion(lesion_id, site_id=site, side=side)
    for item, value in grades.items():
        session.set_grade(lesion_id, item, value)
    return lesion_id


def test_every_change_is_saved_as_it_is_made(store):
    session = new_session(store)
    lesion_id = placed(session, subsite=None, marrow_hyperintensity=2)
    session.update_lesion(lesion_id, comment="bright metaphysis", confidence=4,
                          extent={"kind": "ellipse", "plane": "coronal", "radii_mm": [10, 9], "slice_range_mm": [-6, 6]})
    reopened = load_read(Store.open(store.root), session.read.read_id)
    lesion = reopened.lesion(lesion_id)
    assert lesion.site_id == "femur.distal" and lesion.grades == {"marrow_hyperintensity": 2}
    assert lesion.comment == "bright metaphysis" and lesion.confidence == 4
    assert lesion.sizes_mm == (20.0, 12.0, 18.0)
    assert lesion.volume_ml == pytest.approx(3.14159265 / 6 * 20 * 12 * 18 / 1000)
    assert reopened.revision == session.read.revision >= 5


def test_invalid_edits_are_refused_and_change_nothing(store):
    session = new_session(store)
    lesion_id = placed(session)
    revision = session.read.revision
    for bad in ({"site_id": "femur.middle"}, {"subsite": "vertebral_body"}, {"side": "X"}, {"confidence": 9},
                {"grades": {"marrow_hyperintensity": 5}}, {"grades": {"no_such_item": 1}}, {"reader": "x"}):
        with pytest.raises(CnoError):
            session.update_lesion(lesion_id, **bad)
    assert session.read.revision == revision
    with pytest.raises(CnoError, match="has lesions"):
        session.mark_unit("femur.distal:R", "not_assessable")


def test_a_midline_site_drops_the_proposed_side_and_refuses_one_asked_for(store):
    session = new_session(store)
    lesion_id = session.add_lesion((4.0, 0.0, -200.0), "1.2.3", (40, 337, 6), side="L")  # proposed from the click
    session.update_lesion(lesion_id, site_id="spine.T8")
    assert session.read.lesion(lesion_id).side is None
    assert session.scores().units["spine.T8"].lesions == [lesion_id]
    revision = session.read.revision
    with pytest.raises(CnoError, match="midline site: it has no side"):
        session.update_lesion(lesion_id, side="L")
    with pytest.raises(CnoError, match="midline site: it has no side"):
        session.update_lesion(lesion_id, site_id="spine.T9", side="R")
    assert session.read.revision == revision and session.read.lesion(lesion_id).side is None


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["femur.distal", "tibia.proximal", "spine.T8", "ilium"]),
                  st.sampled_from(["R", "L"])),
        st.tuples(st.just("grade"), st.sampled_from(["marrow_hyperintensity", "signal_extension"]),
                  st.integers(0, 2)),
        st.tuples(st.just("comment"), st.text(max_size=8), st.none()),
        st.tuples(st.just("delete"), st.none(), st.none()),
        st.tuples(st.just("mark"), st.sampled_from(["spine.L5", "clavicle.medial:R", "rib.3:L"]),
                  st.sampled_from(["no_lesion", "not_assessable", None])),
    ),
    min_size=1, max_size=12,
)


def _state(session):
    read = session.read
    return ([l.to_dict() for l in read.lesions], dict(read.unit_marks))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_n_changes_then_n_undos_restore_the_start_and_n_redos_the_end(tmp_path_factory, operations):
    store = Store.open(tmp_path_factory.mktemp("undo"))
    session = new_session(store)
    start = _state(session)
    applied = 0
    for op, a, b in operations:
        lesions = session.read.lesions
        if op == "add":
            placed(session, site=a, side=b if session.taxonomy.site(a).lateral else None)
            applied += 2  # placing and naming the site are two gestures
        elif op == "grade" and lesions:
            session.set_grade(lesions[-1].lesion_id, a, b)
            applied += 1
        elif op == "comment" and lesions:
            session.update_lesion(lesions[0].lesion_id, comment=a)
            applied += 1
        elif op == "delete" and lesions:
            session.delete_lesion(lesions[0].lesion_id)
            applied += 1
        elif op == "mark":
            session.mark_unit(a, b)
            applied += 1
    end = _state(session)
    if not applied:  # only looked at: no read was created
        assert not session.stored and store.db.execute("SELECT COUNT(*) FROM reads").fetchone()[0] == 0
        return
    for _ in range(applied):
        session.undo()
    assert _state(session) == start and not session.can_undo
    assert _state(ReadSession.open(store, session.read.read_id)) == start  # the undos were saved too
    for _ in range(applied):
        session.redo()
    assert _state(session) == end and not session.can_redo
    assert _state(ReadSession.open(store, session.read.read_id)) == end


def test_submitted_reads_are_locked(store):
    session = new_session(store)
    placed(session, marrow_hyperintensity=1)
    session.submit()
    assert session.read.status == "submitted" and session.read.submitted
    for change in (lambda: placed(session), lambda: session.mark_unit("spine.L5", "no_lesion"),
                   lambda: session.delete_lesion("L1")):
        with pytest.raises(CnoError, match="locked"):
            change()


def test_submit_needs_every_lesion_placed(store):
    session = new_session(store)
    session.add_lesion((0, 0, 0), "1.2.3", (1, 1, 1))
    with pytest.raises(CnoError, match="without a site"):
        session.submit()


def _filled_store(store) -> Store:
    """Two readers' reads of the store's first study (a copy of the sample store)."""
    study = store.studies()[0].study_uid
    series = store.volumes(study)[0].volume_id
    for reader, scheme in (("dr-a", None), ("dr-b", "cno-descriptive")):
        session = ReadSession.open_or_create(store, study, reader, scheme)
        lesion = placed(session, series=series, voxel=voxel_at(store, series, (-77.0, 0.0, -420.0)))
        item = session.scheme.items[0].id
        session.set_grade(lesion, item, 1)
        session.update_lesion(lesion, subsite="metaphysis", comment="ä ü ok", confidence=3,
                              extent={"kind": "box", "min_mm": [-80, -5, -430], "max_mm": [-70, 5, -410]})
        spine = placed(session, site="spine.T8", side=None, series=series,
                       voxel=voxel_at(store, series, (-77.0, 0.0, -420.0)))
        session.set_grade(spine, item, "NA")
        session.mark_unit("spine.L5", "not_assessable")
        session.mark_unit("clavicle.medial:R", "no_lesion")
    return store


def test_json_round_trip_is_exact(sample_copy, tmp_path):
    store = _filled_store(sample_copy("first"))
    first = export_document(store)
    path = write_document(first, tmp_path / "reads.json")
    other = sample_copy("other")
    assert import_document(other, path) == [r["read_id"] for r in first["reads"]]
    second = export_document(other)
    assert second == first
    assert json.loads(path.read_text()) == first
    assert first["reads"][0]["scores"]["scheme"] == {"id": "rai-cromris", "version": "2.0.0"}
    lesion = first["reads"][0]["lesions"][0]
    assert lesion["site"]["code"] == {"value": "310652005", "scheme": "SCT", "meaning": "Distal Femur"}
    assert lesion["laterality"]["code"]["value"] == "24028007"
    assert lesion["position"]["lps_mm"] == [-77.0, 0.0, -420.0]


def test_importing_twice_needs_replace(sample_copy, tmp_path):
    store = _filled_store(sample_copy())
    path = write_document(export_document(store), tmp_path / "reads.json")
    with pytest.raises(CnoError, match="already has read .* --replace"):
        import_document(store, path)
    assert import_document(store, path, replace=True)


@pytest.mark.parametrize("change, path, why", [
    (lambda d: d["reads"][0]["lesions"][0].__setitem__("confidence", 7), r"\$\.reads\[0\]\.lesions\[0\]\.confidence", "7"),
    (lambda d: d["reads"][0].__setitem__("colour", "red"), r"\$\.reads\[0\]", "Additional properties"),
    (lambda d: d.__setitem__("schema_version", "0.9"), r"\$\.schema_version", "1.0.0"),
    (lambda d: d["reads"][0]["lesions"][0]["site"].__setitem__("id", "femur.middle"),
     r"\$\.reads\[0\]\.lesions\[0\]\.site\.id", "unknown site"),
    (lambda d: d["reads"][0]["lesions"][0]["grades"].__setitem__("marrow_hyperintensity", 9),
     r"\$\.reads\[0\]\.lesions\[0\]\.grades\.marrow_hyperintensity", "not one of"),
    (lambda d: d["reads"][1]["scheme"].__setitem__("version", "9.9.9"), r"\$\.reads\[1\]\.scheme", "9.9.9"),
    (lambda d: d["reads"][0]["lesions"][0]["position"].__setitem__("lps_mm", [1, 2]),
     r"\$\.reads\[0\]\.lesions\[0\]\.position\.lps_mm", "too short"),
])
def test_invalid_documents_are_refused_whole_with_the_field_path(sample_copy, tmp_path, change, path, why):
    store = _filled_store(sample_copy())
    document = export_document(store)
    change(document)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    target = sample_copy("target")
    with pytest.raises(CnoError, match=rf"bad\.json: {path}.*{why}"):
        import_document(target, bad)
    assert export_document(target)["reads"] == []  # nothing partly applied


def test_import_of_broken_json_names_the_line(store, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"schema_version": "1.0.0",\n "reads": [}')
    with pytest.raises(CnoError, match="broken.json: not valid JSON \\(line 2"):
        import_document(store, bad)


def test_cli_export_import_and_csv(sample_copy, tmp_path, cli):
    store = _filled_store(sample_copy())
    out = tmp_path / "reads.json"
    code, text, err = cli("read", "export", "--out", out, "--store", store.root)
    assert code == 0 and "wrote 2 reads" in text
    code, text, err = cli("read", "import", out, "--store", sample_copy("b").root)
    assert code == 0 and "imported 2 reads" in text
    code, text, err = cli("read", "import", tmp_path / "missing.json", "--store", tmp_path / "b")
    assert code == 1 and "missing.json: no such file" in err
    code, text, err = cli("export-csv", "--out", tmp_path / "csv", "--store", store.root)
    assert code == 0
    with open(tmp_path / "csv" / "lesions.csv", newline="") as fp:
        lesions = list(csv.DictReader(fp))
    assert len(lesions) == 4
    first = lesions[0]
    for column in ("site_id", "site_code", "side", "x_mm", "size_x_mm", "volume_ml", "lesion_item_sum_not_additive",
                   "grade_marrow_hyperintensity", "grade_stir_hyperintensity"):
        assert column in first
    assert first["site_code"] == "310652005" and first["side"] == "R" and float(first["size_x_mm"]) == 10.0
    spine = next(r for r in lesions if r["site_id"] == "spine.T8" and r["scheme_id"] == "rai-cromris")
    assert spine["grade_marrow_hyperintensity"] == "NA" and spine["side"] == ""
    with open(tmp_path / "csv" / "reads.csv", newline="") as fp:
        reads = list(csv.DictReader(fp))
    # L5 is marked not assessable; T8 holds only a lesion graded not assessable, so it is not assessable too
    assert [r["units_not_assessable"] for r in reads] == ["2", "2"]
    assert {"total", "region_lower_limb", "group_knee", "group_knee.distal_femur"} <= set(reads[0])
    assert reads[0]["group_knee"] == reads[0]["region_lower_limb"] == "1"


CHILD = textwrap.dedent("""
    import sys
    from cno_annotate.store import Store
    from cno_annotate.annotation.reads import ReadSession
    store = Store.open(sys.argv[1])
    session = ReadSession.open_or_create(store, "1.2.3", "dr-crash")
    n = len(session.read.lesions)
    print("ready", flush=True)
    while True:
        n += 1
        lesion = session.add_lesion((n, 0, 0), "1.2.3", (n, 0, 0), site_id="femur.distal", side="L",
                                    comment=f"edit {n}", grades={"marrow_hyperintensity": n % 3})
        print(f"committed {lesion}", flush=True)
""")


def test_edits_survive_sigkill_at_random_moments(tmp_path):
    """A child edits continuously and is killed with SIGKILL; the store keeps every committed edit, whole."""
    rng = random.Random(7)
    store_dir = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    committed_total = 0
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(store_dir)], stdout=subprocess.PIPE,
                                 text=True, env=env)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        output = child.stdout.read()
        child.wait()
        committed = [line.split()[1] for line in output.splitlines() if line.startswith("committed")]
        store = Store.open(store_dir)
        rows = store.db.execute("SELECT read_id, revision FROM reads").fetchall()
        if not rows:  # killed before the first change: the read is made with its first lesion
            assert not committed
            store.close()
            continue
        assert len(rows) == 1
        read = load_read(store, rows[0][0])
        ids = [l.lesion_id for l in read.lesions]
        assert set(committed) <= set(ids)  # nothing committed is lost
        for lesion in read.lesions:  # and nothing is half written
            n = int(lesion.lesion_id[1:])
            assert lesion.comment == f"edit {n}" and lesion.grades == {"marrow_hyperintensity": n % 3}
            assert lesion.site_id == "femur.distal" and lesion.side == "L"
        assert read.revision == len(ids)  # the revision moved with every lesion, in the same transaction
        assert ids == [f"L{n}" for n in range(1, len(ids) + 1)]
        committed_total = len(ids)
        store.close()
    assert committed_total > 12


@pytest.mark.sqlite_only
def test_a_locked_store_refuses_the_edit_with_a_message_and_keeps_the_read(store):
    """Another program holds the store; the edit is refused clearly and nothing half-applies."""
    import sqlite3

    session = new_session(store)
    lesion_id = placed(session, marrow_hyperintensity=1)
    before = (session.read.revision, [l.to_dict() for l in session.read.lesions])
    history = len(session._undo)
    store.db.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(store.root / "store.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(CnoError, match="could not be written .*nothing was changed"):
            session.set_grade(lesion_id, "marrow_hyperintensity", 2)
        assert (session.read.revision, [l.to_dict() for l in session.read.lesions]) == before
        assert len(session._undo) == history  # the refused edit is not in the undo history
    finally:
        other.execute("ROLLBACK")
        other.close()
    session.set_grade(lesion_id, "marrow_hyperintensity", 2)  # once the lock is gone the edit goes through
    assert load_read(store, session.read.read_id).lesion(lesion_id).grades["marrow_hyperintensity"] == 2


def test_the_session_reports_each_change_as_a_typed_event(store):
    """Widgets observe typed ReadChange events (kind + label), not free strings."""
    from cno_annotate.annotation.reads import ReadChange, ReadChangeKind

    session = new_session(store)
    seen: list[ReadChange] = []
    session.changed.connect(seen.append)
    lesion_id = placed(session, marrow_hyperintensity=1)
    session.undo()
    session.redo()
    session.submit()
    kinds = [change.kind for change in seen]
    assert kinds[-3:] == [ReadChangeKind.UNDO, ReadChangeKind.REDO, ReadChangeKind.SUBMIT]
    assert set(kinds[:-3]) == {ReadChangeKind.EDIT} and len(kinds) > 3
    assert seen[-3].label == seen[-2].label == seen[-4].label != ""
    assert str(seen[-3]).startswith("undo ") and lesion_id

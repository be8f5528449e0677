"""Blinded reading studies, versions, audit trail, clinical linkage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession, list_reads, load_read
from cno_annotate.clinical import CoordinatorDB, import_clinical, link_patient_ids, unblinded_document
from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store, audit
from cno_annotate.store.db import DESIGN_FIXED_MESSAGE, LOCKED_MESSAGE
from tests.conftest import SAMPLE, integrity_error, new_store


@pytest.fixture(scope="module")
def studies_dir(tmp_path_factory) -> Path:
    """Six small studies: three patients, two with a second timepoint."""
    root = tmp_path_factory.mktemp("rs-studies")
    for seed in range(4):
        generate_study(root / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=seed))
    return root


STORE_BACKENDS = ("sqlite", "postgresql")
BACKEND_FIXTURES = ("trial",)


@pytest.fixture
def trial(request, tmp_path, studies_dir) -> Store:
    store = new_store(request, tmp_path / "store")
    import_paths(store, [studies_dir])
    rs.create(store, "trial", seed=42)
    rs.add_cases(store, "trial", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "trial", ["dr-a", "dr-b", "dr-c"])
    rs.add_readers(store, "trial", ["dr-adj"], role="adjudicator")
    rs.assign(store, "trial")
    return store


def test_seeded_worklists_are_reproducible_and_differ_between_readers(trial, tmp_path, studies_dir):
    codes = sorted(c.reading_code for c in rs.cases(trial, "trial"))
    orders = {r: [e["reading_code"] for e in rs.worklist(trial, "trial", r)] for r in ("dr-a", "dr-b", "dr-c")}
    for order in orders.values():
        assert sorted(order) == codes and len(set(order)) == len(order)  # every case once
    assert len({tuple(o) for o in orders.values()}) == 3  # different orders
    again = Store.open(tmp_path / "again")
    import_paths(again, [studies_dir])
    rs.create(again, "trial", seed=42)
    rs.add_cases(again, "trial", [s.study_uid for s in again.studies()])
    rs.add_readers(again, "trial", ["dr-a", "dr-b", "dr-c"])
    rs.assign(again, "trial")
    same = {r: [e["reading_code"] for e in rs.worklist(again, "trial", r)] for r in orders}
    assert same == orders
    by_code = {c.reading_code: c.study_uid for c in rs.cases(trial, "trial")}
    assert {c.reading_code: c.study_uid for c in rs.cases(again, "trial")} == by_code
    assert rs.assign(trial, "trial", seed=7)["dr-a"] != orders["dr-a"]


def test_codes_and_worklists_reveal_nothing_by_default(trial):
    entry = rs.worklist(trial, "trial", "dr-a")[0]
    assert set(entry) == {"position", "reading_code", "status"}
    rs.create(trial, "open", seed=1, show_age_sex=True, reveal_timepoints=True)
    rs.add_cases(trial, "open", [s.study_uid for s in trial.studies()])
    rs.add_readers(trial, "open", ["dr-a"])
    rs.assign(trial, "open")
    entry = rs.worklist(trial, "open", "dr-a")[0]
    assert {"sex", "age_years", "patient_code", "timepoint", "timepoints"} <= set(entry)
    assert 6 < entry["age_years"] < 17


def test_wrong_reader_and_unknown_study_are_refused(trial, cli):
    with pytest.raises(CnoError, match="not a reader"):
        rs.worklist(trial, "trial", "dr-x")
    with pytest.raises(CnoError, match="no reading study 'nope'"):
        rs.worklist(trial, "nope", "dr-a")
    code, out, err = cli("reading-study", "worklist", "trial", "--reader", "dr-x", "--store", trial.root)
    assert code == 1 and "not a reader" in err and "Traceback" not in err


def _read(store, reader, code="CNO-0001") -> ReadSession:
    uid = rs.study_uid_of(store, "trial", code)
    return ReadSession.open_or_create(store, uid, reader, reading_study="trial")


def _lesion(session, site="femur.distal", side="R", grade=2):
    lesion = session.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id=site, side=side)
    session.set_grade(lesion, "marrow_hyperintensity", grade)
    return lesion


def test_submitted_reads_lock_and_change_only_through_a_new_version(trial):
    session = _read(trial, "dr-a")
    _lesion(session)
    session.submit()
    first = session.read
    with pytest.raises(CnoError, match="locked"):
        _lesion(session)
    with pytest.raises(CnoError, match="needs a reason"):
        ReadSession.new_version(trial, first.read_id, "dr-a", " ")
    with pytest.raises(CnoError, match="belongs to reader dr-a"):
        ReadSession.new_version(trial, first.read_id, "dr-b", "typo")
    second = ReadSession.new_version(trial, first.read_id, "dr-a", "missed the T8 lesion")
    assert second.read.version == 2 and second.read.supersedes == first.read_id
    assert second.read.reason == "missed the T8 lesion" and second.read.status == "draft"
    _lesion(second, site="spine.T8", side=None, grade=1)
    kept = load_read(trial, first.read_id)
    assert kept.status == "submitted" and len(kept.lesions) == 1  # the old version is kept as it was
    assert len(second.read.lesions) == 2
    with pytest.raises(CnoError, match="newer version"):
        ReadSession.new_version(trial, first.read_id, "dr-a", "again")
    latest = list_reads(trial, reader="dr-a", reading_study="trial", latest_only=True)
    assert [r["read_id"] for r in latest] == [second.read.read_id]
    # reopening the case gives the newest version
    assert _read(trial, "dr-a").read.read_id == second.read.read_id


def test_a_reader_cannot_open_or_export_another_readers_read(trial, cli, tmp_path):
    session = _read(trial, "dr-a")
    _lesion(session)
    with pytest.raises(CnoError, match="belongs to reader dr-a"):
        ReadSession.open(trial, session.read.read_id, actor="dr-b")
    with pytest.raises(CnoError, match="cannot export"):
        rs.reader_document(trial, "trial", "dr-a", actor="dr-b")
    document = rs.reader_document(trial, "trial", "dr-b")
    assert document["reads"] == []  # dr-b sees only dr-b's reads
    mine = rs.reader_document(trial, "trial", "dr-a")
    assert [r["reader"] for r in mine["reads"]] == ["dr-a"]
    assert mine["reads"][0]["study_uid"] == "CNO-0001"  # a reading code, not the study UID
    assert mine["reads"][0]["lesions"][0]["position"]["series_uid"] != "1.2.3.4"


def test_a_readers_export_names_no_series_uid_of_the_source_not_even_an_rois(trial):
    """Reader exports replace series UIDs by pseudonyms: a lesion's and an ROI's alike."""
    session = _read(trial, "dr-a")
    lesion = _lesion(session)
    session.add_roi("ellipse", "coronal", [(-70.0, 0.0, -400.0), (-60.0, 0.0, -390.0)], "1.2.3.4")
    document = rs.reader_document(trial, "trial", "dr-a")
    (read,) = document["reads"]
    assert [lesion["lesion_id"] for lesion in read["lesions"]] == [lesion]
    assert "1.2.3.4" not in json.dumps(document)  # was: the ROI kept its series UID
    assert read["rois"][0]["series_uid"] == read["lesions"][0]["position"]["series_uid"]


def test_adjudicator_sees_submitted_reads_side_by_side(trial):
    for reader, grade in (("dr-a", 2), ("dr-b", 1)):
        session = _read(trial, reader)
        _lesion(session, grade=grade)
        session.submit()
    draft = _read(trial, "dr-c")
    _lesion(draft)
    reads = rs.adjudication_view(trial, "trial", "CNO-0001", "dr-adj")
    assert sorted((r["reader"], r["scores"]["total"]) for r in reads) == [("dr-a", 2), ("dr-b", 1)]
    with pytest.raises(CnoError, match="not an adjudicator"):
        rs.adjudication_view(trial, "trial", "CNO-0001", "dr-a")
    adjudication = ReadSession.open_or_create(trial, rs.study_uid_of(trial, "trial", "CNO-0001"), "dr-adj",
                                              reading_study="trial", role="adjudicator")
    _lesion(adjudication, grade=2)
    assert adjudication.read.role == "adjudicator"
    progress = {p["reader"]: p for p in rs.progress(trial, "trial")}
    assert progress["dr-a"]["submitted"] == 1 and progress["dr-c"]["draft"] == 1



def test_progress_gives_active_seconds_as_a_number_of_one_kind_for_every_reader(trial):
    """`reading-study progress --json` writes active_seconds as 0.0 for a reader with no time, like 12.5 for
    another: one type per field (it was the integer 0 beside floats)."""
    _lesion(_read(trial, "dr-a"))
    progress = {p["reader"]: p for p in rs.progress(trial, "trial")}
    assert {type(p["active_seconds"]) for p in progress.values()} == {float}, progress


@pytest.mark.sqlite_only  # PostgreSQL refuses the tampering itself: test_postgres_store.py
def test_audit_chain_verifies_and_names_the_first_broken_entry(trial, cli):
    session = _read(trial, "dr-a")
    lesion = _lesion(session)
    session.update_lesion(lesion, comment="checked")
    session.undo()
    session.submit()
    result = audit.verify(trial.db)
    assert result.ok and result.entries >= 9
    code, out, _ = cli("audit", "verify", "--store", trial.root)
    assert code == 0 and "intact" in out
    actions = [e["action"] for e in audit.entries(trial.db, 100)]
    assert {"create", "add lesion", "edit comment", "undo edit comment", "submit", "assign"} <= set(actions)
    entry = next(e for e in audit.entries(trial.db, 100) if e["action"] == "edit comment")
    assert entry["actor"] == "dr-a"
    assert entry["detail"]["after"]["lesions"][lesion]["comment"] == "checked"
    assert entry["detail"]["before"]["lesions"][lesion]["comment"] == ""

    trial.db.execute("UPDATE audit SET actor = 'dr-b' WHERE seq = 5")  # edited in the database
    assert audit.verify(trial.db).broken_at == 5
    code, _, err = cli("audit", "verify", "--store", trial.root)
    assert code == 1 and "broken at entry 5" in err


@pytest.mark.sqlite_only  # PostgreSQL refuses the tampering itself: test_postgres_store.py
def test_deleted_audit_entries_are_found(trial):
    session = _read(trial, "dr-a")
    _lesion(session)
    total = audit.verify(trial.db).entries
    trial.db.execute("DELETE FROM audit WHERE seq = 3")
    assert audit.verify(trial.db).broken_at == 3
    trial.db.execute("DELETE FROM audit")  # wiping the table is no escape
    assert not audit.verify(trial.db).ok
    assert total > 3


@pytest.mark.sqlite_only  # PostgreSQL refuses the tampering itself: test_postgres_store.py
def test_truncating_the_audit_tail_is_found(trial):
    session = _read(trial, "dr-a")
    _lesion(session)
    last = audit.verify(trial.db).entries
    trial.db.execute("DELETE FROM audit WHERE seq = ?", (last,))
    result = audit.verify(trial.db)
    assert result.broken_at == last and "missing" in result.reason


GOOD_CSV = """record_id,visit_date,sex,age_at_onset,age_at_diagnosis,painful_sites,treatments,crp_mg_l,esr_mm_h
R-001,2026-10-01,F,8.5,9.1,femur.distal:R; Proximal tibia L; T8,nsaid 2026-09-01..2026-10-15; pamidronate 2026-10-16..,12,31
R-002,2026-10-03,M,10,10.4,clavicle.medial:R,,3.5,12
R-002,2027-04-03,M,10,10.4,,bisphosphonate 2026-10-20..2027-01-20,,
"""


@pytest.mark.parametrize("csv_text, message", [
    (GOOD_CSV.replace("Proximal tibia L", "kneecap joint L"), r"line 2: unknown site 'kneecap joint'"),
    (GOOD_CSV.replace("2026-10-03", "03/10/2026"), r"line 3: visit_date '03/10/2026' is not a date"),
    (GOOD_CSV + "R-001,2026-10-01,F,,,,,,\n", r"line 5: record R-001 visit 2026-10-01 repeats line 2"),
    (GOOD_CSV.replace(",esr_mm_h", ""), r"missing column\(s\) esr_mm_h"),
    (GOOD_CSV.replace("clavicle.medial:R", "clavicle.medial"), r"line 3: .*needs a side"),
    (GOOD_CSV.replace("nsaid 2026", "aspirin 2026"), r"line 2: unknown treatment 'aspirin'"),
])
def test_clinical_import_refuses_bad_files_whole(tmp_path, csv_text, message):
    path = tmp_path / "clinical.csv"
    path.write_text(GOOD_CSV)
    db = CoordinatorDB.open(tmp_path / "key.sqlite")
    assert import_clinical(db, path) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text.replace("R-00", "S-00"))  # new records, so only the error can stop them
    with pytest.raises(CnoError, match=message.replace("R-00", "S-00")):
        import_clinical(db, bad)
    assert db.db.execute("SELECT COUNT(*) FROM visits").fetchone()[0] == 3  # nothing partial
    assert db.db.execute("SELECT COUNT(*) FROM visits WHERE record_id LIKE 'S-%'").fetchone()[0] == 0


def test_clinical_import_maps_sites_and_treatments(tmp_path, cli):
    path = tmp_path / "clinical.csv"
    path.write_text(GOOD_CSV)
    code, out, err = cli("clinical", "import", path, "--link-key", tmp_path / "key.sqlite")
    assert code == 0 and "imported 3 visits" in out
    db = CoordinatorDB.open(tmp_path / "key.sqlite")
    (visit,) = db.visits("R-001")
    assert {(s.site_id, s.side) for s in visit.painful_sites} == {
        ("femur.distal", "R"), ("tibia.proximal", "L"), ("spine.T8", None)}
    assert [(t.treatment, t.start, t.stop) for t in visit.treatments] == [
        ("nsaid", "2026-09-01", "2026-10-15"), ("bisphosphonate", "2026-10-16", None)]
    assert visit.crp_mg_l == 12 and visit.sex == "F"
    code, _, err = cli("clinical", "import", path, "--link-key", tmp_path / "key.sqlite")
    assert code == 1 and "already imported" in err
    code, _, err = cli("clinical", "import", path)
    assert code == 2  # the link key's location is always explicit


def test_unblinded_export_joins_reads_and_records_for_the_coordinator(trial, tmp_path, cli):
    session = _read(trial, "dr-a")
    _lesion(session)
    session.submit()
    key = tmp_path / "key.sqlite"
    db = CoordinatorDB.open(key)
    assert link_patient_ids(trial, db, "trial") == 4
    patient = next(s.patient_id for s in trial.studies()
                   if s.study_uid == rs.study_uid_of(trial, "trial", "CNO-0001"))
    csv_path = tmp_path / "clinical.csv"
    csv_path.write_text(GOOD_CSV.replace("R-001", patient))
    import_clinical(db, csv_path)
    document = unblinded_document(trial, db, "trial")
    case = next(c for c in document["cases"] if c["reading_code"] == "CNO-0001")
    assert case["record_id"] == patient and case["clinical"][0]["crp_mg_l"] == 12
    assert case["reads"][0]["reader"] == "dr-a"
    code, out, err = cli("reading-study", "export-unblinded", "trial", "--link-key", key, "--out", tmp_path / "out",
                         "--store", trial.root)
    assert code == 0, err
    reads_csv = (tmp_path / "out" / "reads.csv").read_text()
    assert patient in reads_csv and "crp_mg_l" in reads_csv.splitlines()[0]
    # the reader-facing export holds neither the record id nor the study UID
    code, _, err = cli("reading-study", "export", "trial", "--reader", "dr-a", "--out", tmp_path / "mine.json",
                       "--store", trial.root)
    assert code == 0, err
    mine = (tmp_path / "mine.json").read_text()
    assert patient not in mine and rs.study_uid_of(trial, "trial", "CNO-0001") not in mine
    assert any(e["action"] == "export-unblinded" for e in audit.entries(trial.db, 100))


# -- PHI in reader mode --------------------------------------------------------------------------
def _identifiers() -> list[str]:
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())
    fake = truth["fake_identifiers"]
    last, first = fake["PatientName"].split("^")
    birth = fake["PatientBirthDate"]
    values = [last, first, fake["PatientID"], birth, f"{birth[:4]}-{birth[4:6]}-{birth[6:]}", fake["AccessionNumber"],
              fake["InstitutionName"], fake["ReferringPhysicianName"].split("^")[0], fake["StudyDate"],
              f"{fake['StudyDate'][:4]}-{fake['StudyDate'][4:6]}-{fake['StudyDate'][6:]}", truth["study_uid"],
              "WB MRI CNO follow-up", "t2_tirm_cor_wb", "t1_tse_cor_wb"]
    return values + [s["series_uid"] for s in truth["series"]]


@pytest.fixture
def blinded_store(tmp_path, sample_store) -> Path:
    root = tmp_path / "blind"
    shutil.copytree(sample_store.root, root)
    store = Store.open(root)
    rs.create(store, "blind", seed=3)
    rs.add_cases(store, "blind", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "blind", ["dr-a"])
    rs.assign(store, "blind")
    store.close()
    return root


def _visible_strings(window) -> list[str]:
    from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QLineEdit, QListWidget, QWidget

    texts = [window.windowTitle(), window.statusBar().currentMessage()]
    for widget in window.findChildren(QWidget):
        texts += [widget.toolTip(), widget.windowTitle(), widget.statusTip(), widget.accessibleName()]
        if isinstance(widget, (QLabel, QAbstractButton)):
            texts.append(widget.text())
        if isinstance(widget, QLineEdit):
            texts += [widget.text(), widget.placeholderText()]
        if isinstance(widget, QComboBox):
            texts += [widget.itemText(i) for i in range(widget.count())]
        if isinstance(widget, QListWidget):
            texts += [widget.item(i).text() for i in range(widget.count())]
            texts += [widget.item(i).toolTip() for i in range(widget.count())]
    for action in window.findChildren(type(window.mark_action)):
        texts += [action.text(), action.toolTip()]
    for panel in window.panels.values():
        texts += panel.view.overlay_texts()
    texts.append(window.position_label.text())
    return [t for t in texts if t]


@pytest.mark.gui
def test_no_identifier_is_visible_in_reader_mode(qtbot, blinded_store, tmp_path):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    pytest.importorskip("PySide6")
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(blinded_store, reader="dr-a", reading_study="blind")
    window.resize(1300, 850)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    assert window.session.views["left"].ready
    window.mark_action.setChecked(True)
    view = window.panels["left"].view
    from PySide6.QtCore import Qt

    qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(337.0, 40.0).toPoint())
    # a mark click waits out a possible double click before it places the lesion
    qtbot.waitUntil(lambda: window.lesion_panel.lesions.count() == 1, timeout=5000)
    window._show_position(window.session.views["left"].point)
    strings = _visible_strings(window)
    lesion_label = window.lesion_panel.lesions.item(0).text()
    assert lesion_label in strings  # the lesion's own label is among the strings checked
    assert "CNO-0001" in " ".join(strings)
    window.grab().save(str(tmp_path / "reader-mode.png"))
    leaked = [(ident, s) for ident in _identifiers() for s in strings if ident.lower() in s.lower()]
    assert leaked == []


def test_no_identifier_in_reader_exports_and_logs(blinded_store, tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CNO_ANNOTATE_STORE": str(blinded_store)}
    outputs = []
    for args in (["view", "--reader", "dr-a", "--reading-study", "blind", "--screenshot", str(tmp_path / "r.png")],
                 ["reading-study", "worklist", "blind", "--reader", "dr-a", "--json"],
                 ["reading-study", "export", "blind", "--reader", "dr-a", "--out", str(tmp_path / "mine.json")]):
        result = subprocess.run([sys.executable, "-m", "cno_annotate", *args], capture_output=True, text=True,
                                env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    outputs.append((tmp_path / "mine.json").read_text())
    text = "\n".join(outputs).lower()
    assert "cno-0001" in text
    assert [ident for ident in _identifiers() if ident.lower() in text] == []


def test_reader_mode_refuses_a_named_study_rather_than_opening_another_case(blinded_store, cli, tmp_path):
    """``view CNO-0002 --reader dr-a --reading-study blind`` opened the first case of the worklist, saying nothing
    (found in a new-user trial): reader mode opens the worklist, so a study or ``--sample`` is refused in one line."""
    pytest.importorskip("PySide6")
    shot = tmp_path / "r.png"
    for named in (["CNO-0002"], ["--sample"]):
        code, out, err = cli("view", "--store", blinded_store, "--reader", "dr-a", "--reading-study", "blind",
                             *named, "--screenshot", shot)
        assert code == 1, (out, err)
        assert "choose the case in the worklist" in err and len(err.strip().splitlines()) == 1, err
        assert not shot.exists()


@pytest.mark.gui
def test_reader_mode_worklist_next_case_and_submit(qtbot, tmp_path, studies_dir):
    from cno_annotate_ui.main_window import MainWindow

    store = Store.open(tmp_path / "store")
    import_paths(store, [studies_dir])
    rs.create(store, "wl", seed=5)
    rs.add_cases(store, "wl", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "wl", ["dr-a"])
    order = rs.assign(store, "wl")["dr-a"]
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-a", reading_study="wl")
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    assert window.current_code == order[0]
    assert window.study_list.count() == len(order)
    assert [window.study_list.item(n).data(256) for n in range(len(order))] == order  # Qt.UserRole
    session = window.read_session
    assert session.read.reading_study == "wl" and session.read.reader == "dr-a"
    lesion = session.add_lesion((0, 0, 0), "1.2", (0, 0, 0), site_id="spine.T8")
    session.set_grade(lesion, "marrow_hyperintensity", 1)
    session.submit()
    assert "submitted" in window.study_list.item(0).text()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    assert window.current_code == order[1]
    assert window.windowTitle().endswith(order[1])


def test_cli_counts_of_one_are_singular(tmp_path, cli):
    path = tmp_path / "clinical.csv"
    path.write_text(GOOD_CSV.splitlines()[0] + "\n" + GOOD_CSV.splitlines()[1] + "\n")
    code, out, err = cli("clinical", "import", path, "--link-key", tmp_path / "key.sqlite")
    assert code == 0 and f"imported 1 visit from {path}" in out, out + err


def test_follow_up_outcomes_are_locked_and_audited_and_the_design_fixed_by_the_database(trial, other_connection):
    prior_uid, current_uid = sorted(trial.study_uids())[:2]
    prior = ReadSession.open_or_create(trial, prior_uid, "dr-a")
    prior.add_lesion((-70.0, 0.0, -400.0), "1.2.3.4", (1, 2, 3), site_id="femur.distal", side="R")
    prior.submit()
    tracking_uid = prior.read.lesions[0].tracking_uid
    session = ReadSession.open_or_create(trial, current_uid, "dr-a")
    session.follow_up(prior.read.read_id)
    session.set_outcome(tracking_uid, "resolved")
    session.submit()
    assert load_read(trial, session.read.read_id).followup.outcomes == {tracking_uid: "resolved"}
    assert audit.verify(trial.db).ok  # the follow-up part is in the read's audited state
    raw = other_connection(trial)
    read_id = session.read.read_id
    for sql in ("UPDATE followup_outcomes SET status = 'persisting' WHERE read_id = ?",
                "DELETE FROM followup_outcomes WHERE read_id = ?",
                "INSERT INTO followup_outcomes VALUES (?, '1.2.3', 'resolved')"):
        with pytest.raises(integrity_error(trial), match=LOCKED_MESSAGE):
            raw.execute(sql, (read_id,))
    rs.set_design(trial, "trial", "paired-chronological")  # no read of the study yet: it may change
    code = rs.worklist(trial, "trial", "dr-b")[0]["reading_code"]
    started = ReadSession.open_or_create(trial, rs.study_uid_of(trial, "trial", code), "dr-b", reading_study="trial")
    started.add_lesion((0.0, 0.0, -100.0), "1.2.3.4", (1, 1, 1), site_id="spine.L2")
    with pytest.raises(integrity_error(trial), match=DESIGN_FIXED_MESSAGE):
        raw.execute("UPDATE reading_studies SET design = 'paired-hidden-order' WHERE name = 'trial'")
    with pytest.raises(CnoError, match=DESIGN_FIXED_MESSAGE):
        rs.set_design(trial, "trial", "unpaired-blinded")
    assert rs.get(trial, "trial").design == rs.ReadingDesign.PAIRED_CHRONOLOGICAL
    assert audit.verify(trial.db).ok


def test_a_reader_with_nothing_left_to_read_gets_a_screenshot_not_a_hang(blinded_store, tmp_path):
    """Every case submitted (or none assigned): reader mode shows the worklist and ends, it does not wait forever."""
    from cno_annotate.annotation.reads import ReadSession

    store = Store.open(blinded_store)
    for study in store.studies():  # every study is a case of "blind", all in dr-a's worklist
        session = ReadSession.open_or_create(store, study.study_uid, "dr-a", reading_study="blind")
        session.mark_unit("spine.L5", "no_lesion")
        session.submit()
    store.close()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CNO_ANNOTATE_STORE": str(blinded_store)}
    out = tmp_path / "done.png"
    result = subprocess.run([sys.executable, "-m", "cno_annotate", "view", "--reader", "dr-a", "--reading-study",
                             "blind", "--screenshot", str(out)], capture_output=True, text=True, env=env, timeout=90)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "wrote" in result.stdout


def test_a_reader_whose_every_case_is_submitted_is_told_so_in_the_views(blinded_store, qtbot):
    """Nothing opens; the views said "No series selected" and the reason was a status message gone in 10 s."""
    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate.annotation.reads import ReadSession

    store = Store.open(blinded_store)
    for study in store.studies():
        session = ReadSession.open_or_create(store, study.study_uid, "dr-a", reading_study="blind")
        session.mark_unit("spine.L5", "no_lesion")
        session.submit()
    store.close()
    window = MainWindow(blinded_store, reader="dr-a", reading_study="blind")
    qtbot.addWidget(window)
    window.show()
    assert not window.open_next_case()
    messages = [window.session.views[name].message for name in ("left", "right")]
    assert all("Every case of your worklist is submitted" in m for m in messages), messages
    assert not window.undo_action.isEnabled() and not window.redo_action.isEnabled()  # no read: nothing to undo
    window.close()

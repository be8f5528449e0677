"""Exports: no formula cells, plain-text reader ids, safe --out targets, every export audited, nothing half done."""

from __future__ import annotations

import csv
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from cno_annotate.annotation.csv_export import FORMULA_START, safe_cell
from cno_annotate.errors import CnoError
from cno_annotate.store import Store, audit

READERS = ["evil<i>", "$\\foo$"]  # markup, and matplotlib math text (a formula start is refused at registration)
ADJUDICATOR = "<b>adj</b>"
COMMENTS = ["=1+2", '-2+3+cmd|"/C calc"!A0', "+SUM(A1)", "\tindented", "@here", "plain"]
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A reading study whose reader ids and comments are hostile to spreadsheets and matplotlib."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.clinical import CoordinatorDB, import_clinical, link_patient_ids
    from cno_annotate.importer import import_paths
    from cno_annotate.sample import StudyPlan, generate_study

    root = tmp_path_factory.mktemp("hostile")
    for seed in range(3):
        generate_study(root / f"s{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=seed))
    store = Store.open(root / "store")
    import_paths(store, [root])
    rs.create(store, "demo", seed=1)
    rs.add_cases(store, "demo", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "demo", READERS)
    rs.add_readers(store, "demo", [ADJUDICATOR], role="adjudicator")
    rs.assign(store, "demo")
    for n, case in enumerate(rs.cases(store, "demo")):
        series = store.volumes(case.study_uid)[0].volume_id
        for r, (reader, role) in enumerate([(READERS[0], "reader"), (READERS[1], "reader"), (ADJUDICATOR, "adjudicator")]):
            session = ReadSession.open_or_create(store, case.study_uid, reader, reading_study="demo", role=role)
            lesion = session.add_lesion((-70.5, 0, -400), series, (1, 1, 1), site_id="femur.distal", side="R",
                                        comment=COMMENTS[(n + r) % len(COMMENTS)])
            session.set_grade(lesion, "marrow_hyperintensity", (n + r) % 3)
            session.submit()
    key = root / "key.sqlite"
    db = CoordinatorDB.open(key)
    link_patient_ids(store, db, "demo")
    clinical = root / "clinical.csv"
    lines = ["record_id,visit_date,sex,age_at_onset,age_at_diagnosis,painful_sites,treatments,crp_mg_l,esr_mm_h"]
    lines += [f"{s.patient_id},2026-11-01,F,9,10,femur.distal:R,,5,20" for s in store.studies()]
    clinical.write_text("\n".join(lines) + "\n")
    import_clinical(db, clinical)
    store.close()
    return root / "store", key


@pytest.fixture
def hostile_copy(hostile, tmp_path):
    store_dir, key = hostile
    shutil.copytree(store_dir, tmp_path / "store")
    return tmp_path / "store", key


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fp:
        return list(csv.reader(fp))


def _formula_cells(folder: Path) -> list[tuple[str, str]]:
    found = []
    for path in folder.rglob("*.csv"):
        for row in _cells(path):
            found += [(path.name, c) for c in row if c.startswith(FORMULA_START) and not _DECIMAL.fullmatch(c)]
    return found


def test_safe_cell_follows_owasp_and_keeps_numbers():
    assert safe_cell("=1+2") == "'=1+2" and safe_cell("@x") == "'@x" and safe_cell("\tx") == "'\tx"
    assert safe_cell("\rx") == "\nx" and safe_cell("-2+3") == "'-2+3" and safe_cell("+A1") == "'+A1"
    assert safe_cell(-70.5) == -70.5 and safe_cell("-70.5") == "-70.5" and safe_cell("-1e3") == "-1e3"
    assert safe_cell("plain") == "plain" and safe_cell("") == "" and safe_cell(3) == 3


def test_no_csv_the_tool_writes_holds_a_formula_cell(hostile_copy, tmp_path, cli):
    store, key = hostile_copy
    code, _, err = cli("export-csv", "--out", tmp_path / "csv", "--store", store)
    assert code == 0, err
    code, _, err = cli("reading-study", "export-unblinded", "demo", "--link-key", key, "--out", tmp_path / "unblinded",
                       "--store", store)
    assert code == 0, err
    code, _, err = cli("report", "agreement", "demo", "--out", tmp_path / "report", "--store", store)
    assert code == 0, err  # reader id $\foo$ is drawn as text, not parsed as math
    assert _formula_cells(tmp_path) == []
    for folder in ("csv", "unblinded"):
        rows = list(csv.DictReader(open(tmp_path / folder / "lesions.csv", newline="", encoding="utf-8")))
        assert {r["comment"] for r in rows} == {"'" + c for c in COMMENTS[:5]}
        assert {r["reader"] for r in rows} == {"evil<i>", "$\\foo$", ADJUDICATOR}
        assert {r["x_mm"] for r in rows} == {"-70.5"}  # a negative number stays a number
    report = (tmp_path / "report" / "report.json").read_text()
    assert str(tmp_path / "report" / "figures" / "bland_altman.png") in report and ".staging" not in report
    assert (tmp_path / "report" / "figures" / "bland_altman.png").stat().st_size > 1000


def test_clinical_import_refuses_record_ids_that_start_a_formula(tmp_path):
    from cno_annotate.clinical import CoordinatorDB, import_clinical

    bad = tmp_path / "clinical.csv"
    bad.write_text("record_id,visit_date,sex,age_at_onset,age_at_diagnosis,painful_sites,treatments,crp_mg_l,esr_mm_h\n"
                   "=HYPERLINK(1),2026-11-01,F,9,10,,,,\nok-1,2026-11-01,F,9,10,,,,\n@x,2026-11-01,F,9,10,,,,\n")
    db = CoordinatorDB.open(tmp_path / "key.sqlite")
    with pytest.raises(CnoError, match=r"line 2: record_id '=HYPERLINK\(1\)' starts with '='.*\n.*line 4: record_id '@x'"):
        import_clinical(db, bad)
    assert db.db.execute("SELECT COUNT(*) FROM visits").fetchone()[0] == 0


def _audit_actions(store_dir: Path) -> list[str]:
    store = Store.open(store_dir)
    try:
        return [e["action"] for e in audit.entries(store.db, 100_000)]
    finally:
        store.close()


def test_every_export_writes_an_audit_entry(hostile_copy, tmp_path, cli):
    store, key = hostile_copy
    volume = Store.open(store).volumes()[0].volume_id
    before = _audit_actions(store)
    commands = [
        ("read", "export", "--out", tmp_path / "reads.json"),
        ("export-csv", "--out", tmp_path / "csv"),
        ("export-nifti", volume, "--out", tmp_path / "v.nii.gz"),
        ("report", "agreement", "demo", "--out", tmp_path / "report"),
        ("reading-study", "export", "demo", "--reader", READERS[1], "--out", tmp_path / "mine.json"),
        ("reading-study", "export-unblinded", "demo", "--link-key", key, "--out", tmp_path / "unblinded"),
    ]
    for command in commands:
        code, _, err = cli(*command, "--store", store)
        assert code == 0, err
    after = _audit_actions(store)
    assert after[:len(before)] == before
    assert after[len(before):] == ["export", "export-csv", "export-nifti", "report", "export", "export-unblinded"]
    entry = audit.entries(Store.open(store).db, 1)[0]
    assert entry["detail"]["after"]["files"] == sorted(str(tmp_path / "unblinded" / n)
                                                      for n in ("lesions.csv", "reads.csv", "unblinded.json"))


def test_out_refuses_devices_links_and_folders_and_replaces_files_only_with_force(hostile_copy, tmp_path, cli):
    store, _ = hostile_copy
    entries = len(_audit_actions(store))
    pipe = tmp_path / "pipe.json"  # a non-regular file that is safe to test with (never /dev/null: as root a
    os.mkfifo(pipe)                 # failing test would replace the machine's device node)
    link = tmp_path / "link.json"
    link.symlink_to(pipe)
    (tmp_path / "folder.json").mkdir()
    for target, why in ((pipe, "not a regular file"), (link, "symbolic link"),
                        (tmp_path / "folder.json", "not a regular file")):
        code, _, err = cli("read", "export", "--out", target, "--store", store)
        assert code == 1 and why in err and err.count("\n") == 1
    assert pipe.is_fifo() and link.is_symlink() and (tmp_path / "folder.json").is_dir()
    existing = tmp_path / "reads.json"
    existing.write_text("keep me")
    code, _, err = cli("read", "export", "--out", existing, "--store", store)
    assert code == 1 and "exists; use --force" in err and existing.read_text() == "keep me"
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "reads.csv").write_text("keep me")
    code, _, err = cli("export-csv", "--out", tmp_path / "csv", "--store", store)
    assert code == 1 and "reads.csv exists; use --force" in err
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["reads.csv"]  # nothing else, nothing staged
    code, _, err = cli("export-nifti", "whatever", "--out", existing.with_suffix(".nii"), "--store", store)
    assert code == 1
    assert len(_audit_actions(store)) == entries  # refused exports are not recorded
    code, _, err = cli("read", "export", "--out", existing, "--force", "--store", store)
    assert code == 0 and existing.read_text().startswith("{")
    code, _, err = cli("export-csv", "--out", tmp_path / "csv", "--force", "--store", store)
    assert code == 0 and (tmp_path / "csv" / "reads.csv").read_text().startswith("read_id")


def test_a_failed_export_leaves_no_files_and_no_entry(hostile_copy, tmp_path):
    """With the store locked the unblinded export cannot be audited: it must not leave identifying files."""
    from cno_annotate.clinical import CoordinatorDB, unblinded_document, write_unblinded
    from cno_annotate.exports import audited_export

    store_dir, key = hostile_copy
    store = Store.open(store_dir)
    document = unblinded_document(store, CoordinatorDB.open(key), "demo")
    entries = len(audit.entries(store.db, 100_000))
    store.db.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(store_dir / "store.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program holds the store
    out = tmp_path / "unblinded"
    try:
        with pytest.raises(CnoError, match="could not be written"):
            audited_export(store, out, False, "export-unblinded", "reading-study:demo",
                           lambda folder: (write_unblinded(document, folder), {}))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not out.exists()  # no file, no staging folder, not even the folder it made
    assert len(audit.entries(store.db, 100_000)) == entries
    audited_export(store, out, False, "export-unblinded", "reading-study:demo",
                   lambda folder: (write_unblinded(document, folder), {}))
    assert sorted(p.name for p in out.iterdir()) == ["lesions.csv", "reads.csv", "unblinded.json"]


def test_the_adjudicator_panel_shows_reader_ids_as_text(qtbot, hostile_copy, tmp_path):
    import html

    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import Qt

    store, _ = hostile_copy
    window = MainWindow(store, reader=ADJUDICATOR, reading_study="demo")
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_case("CNO-0001")
    text = window.case_info.text()
    assert html.escape(READERS[0]) in text and "<i>" not in text  # markup in a reader id is shown, not applied
    assert window.lesion_panel.header.textFormat() == Qt.PlainText  # the reader id in the header is text too
    window.case_info.grab().save(str(tmp_path / "case_info.png"))


LINE_BREAK_COMMENTS = ["\r=1", "note\n=2", "a\r\n@b", "x\r+SUM(A1)", "two\nlines"]


def test_cells_with_line_breaks_are_quoted_and_start_no_formula_row(tmp_path):
    from cno_annotate.annotation.csv_export import write_csv

    path = write_csv(tmp_path / "t.csv", ["id", "comment"],
                     [{"id": n, "comment": c} for n, c in enumerate(LINE_BREAK_COMMENTS)])
    raw = path.read_text(encoding="utf-8")
    assert [ln for ln in raw.replace("\r", "\n").split("\n") if ln.startswith(("=", "+", "-", "@"))] == []
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4"]  # no cell started a row of its own
    assert [r["comment"] for r in rows] == ["\n'=1", "note\n'=2", "a\n'@b", "x\n'+SUM(A1)", "two\nlines"]


def _new_draft_version(store_dir: Path) -> tuple[str, str]:
    from cno_annotate.annotation.reads import ReadSession, list_reads

    store = Store.open(store_dir)
    try:
        old = list_reads(store, reader="$\\foo$", reading_study="demo")[0]
        session = ReadSession.new_version(store, old["read_id"], actor="$\\foo$", reason="second look")
        return old["read_id"], session.read.read_id
    finally:
        store.close()


def test_export_csv_names_reading_study_role_version_and_filters_latest_submitted(hostile_copy, tmp_path, cli):
    store, _ = hostile_copy
    old_id, draft_id = _new_draft_version(store)
    code, _, err = cli("export-csv", "--out", tmp_path / "all", "--store", store)
    assert code == 0, err
    for name in ("reads.csv", "units.csv", "lesions.csv"):
        rows = list(csv.DictReader(open(tmp_path / "all" / name, newline="", encoding="utf-8")))
        assert {"reading_study", "reading_code", "role", "version", "supersedes", "status"} <= set(rows[0])
    reads = {r["read_id"]: r for r in csv.DictReader(open(tmp_path / "all" / "reads.csv", newline="", encoding="utf-8"))}
    assert reads[draft_id]["version"] == "2" and reads[draft_id]["supersedes"] == old_id
    assert reads[draft_id]["status"] == "draft" and reads[draft_id]["reading_study"] == "demo"
    assert reads[draft_id]["reading_code"].startswith("CNO-") and reads[draft_id]["role"] == "reader"
    assert {r["role"] for r in reads.values()} == {"reader", "adjudicator"}
    code, _, err = cli("export-csv", "--out", tmp_path / "latest", "--reading-study", "demo", "--latest-submitted",
                       "--store", store)
    assert code == 0, err
    latest = {r["read_id"]: r for r in csv.DictReader(open(tmp_path / "latest" / "reads.csv", newline="", encoding="utf-8"))}
    assert draft_id not in latest and old_id in latest and len(latest) == len(reads) - 1
    assert {r["status"] for r in latest.values()} == {"submitted"}
    code, _, err = cli("export-csv", "--out", tmp_path / "none", "--reading-study", "nosuch", "--store", store)
    assert code != 0 and "nosuch" in err
    codebook = list(csv.DictReader(open(tmp_path / "all" / "columns.csv", newline="", encoding="utf-8")))
    assert [r["column"] for r in codebook if not r["meaning"].strip()] == []


def test_clinical_import_refuses_non_finite_impossible_and_absurd_values_with_line_numbers(tmp_path):
    from cno_annotate.clinical import CoordinatorDB, import_clinical

    bad = tmp_path / "clinical.csv"
    bad.write_text("record_id,visit_date,sex,age_at_onset,age_at_diagnosis,painful_sites,treatments,crp_mg_l,esr_mm_h\n"
                   "r1,2026-11-01,F,1e400,10,,,,\n"      # line 2: inf
                   "r2,2026-11-01,F,9,NaN,,,,\n"         # line 3: NaN
                   "r3,2026-11-01,F,12,10,,,,\n"         # line 4: onset after diagnosis
                   "r4,2026-11-01,F,9,10,,,5,1e6\n"      # line 5: ESR absurd
                   "r5,2026-11-01,F,9,10,,,1001,20\n"    # line 6: CRP above 1000 mg/L
                   "r6,2026-11-01,F,9,31,,,,\n"          # line 7: age above 30 years
                   "ok,2026-11-01,F,9,10,,,1000,200\n")  # the bounds themselves are fine
    db = CoordinatorDB.open(tmp_path / "key.sqlite")
    with pytest.raises(CnoError) as caught:
        import_clinical(db, bad)
    message = str(caught.value)
    for line, why in [(2, "age_at_onset '1e400' is not a finite number"), (3, "age_at_diagnosis 'NaN' is not a finite"),
                      (4, "age_at_onset 12 is after age_at_diagnosis 10"), (5, "esr_mm_h '1e6' is outside 0-200"),
                      (6, "crp_mg_l '1001' is outside 0-1000"), (7, "age_at_diagnosis '31' is outside 0-30")]:
        assert f"line {line}: {why}" in message, message
    assert "line 8" not in message
    assert db.db.execute("SELECT COUNT(*) FROM visits").fetchone()[0] == 0


def test_link_add_refuses_formula_record_ids_and_overwrites_only_with_replace_and_link_list_shows_them(
        hostile_copy, tmp_path, cli):
    store, _ = hostile_copy
    key = tmp_path / "fresh-key.sqlite"
    code, _, err = cli("link", "add", "demo", "CNO-0001", "=HYPERLINK(1)", "--link-key", key, "--store", store)
    assert code != 0 and "starts with '='" in err
    code, out, err = cli("link", "add", "demo", "CNO-0001", "rec-1", "--link-key", key, "--store", store)
    assert code == 0, err
    code, _, err = cli("link", "add", "demo", "CNO-0001", "rec-2", "--link-key", key, "--store", store)
    assert code != 0 and "already linked" in err and "--replace" in err
    code, out, err = cli("link", "list", "demo", "--link-key", key, "--store", store)
    assert code == 0 and "CNO-0001" in out and "rec-1" in out and "rec-2" not in out, err
    code, _, err = cli("link", "add", "demo", "CNO-0001", "rec-2", "--replace", "--link-key", key, "--store", store)
    assert code == 0, err
    code, out, _ = cli("link", "list", "demo", "--link-key", key, "--store", store)
    assert "rec-2" in out and "rec-1" not in out


def test_export_and_report_refuse_a_symlinked_output_folder(hostile_copy, tmp_path, cli):
    store, _ = hostile_copy
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "linkdir"
    link.symlink_to(real, target_is_directory=True)
    for args in (("export-csv", "--out", link, "--force"), ("report", "agreement", "demo", "--out", link),
                 ("report", "agreement", "demo", "--out", link, "--force")):
        code, _, err = cli(*args, "--store", store)
        assert code != 0 and "symbolic link" in err, (args, err)
    assert list(real.iterdir()) == []


def test_report_force_into_an_older_report_leaves_no_stale_files_of_that_run(hostile_copy, tmp_path, cli):
    store, _ = hostile_copy
    out = tmp_path / "report"
    code, _, err = cli("report", "agreement", "demo", "--out", out, "--store", store)
    assert code == 0, err
    stale = out / "figures" / "old_run_only.png"  # a file the earlier run wrote that the next one does not
    stale.write_bytes(b"png")
    _record_as_exported(store, str(stale))
    (out / "notes.txt").write_text("the user's own file")
    code, _, err = cli("report", "agreement", "demo", "--out", out, "--store", store)
    assert code != 0 and "--force" in err
    code, _, err = cli("report", "agreement", "demo", "--out", out, "--force", "--store", store)
    assert code == 0, err
    assert not stale.exists() and (out / "notes.txt").read_text() == "the user's own file"
    assert (out / "report.json").exists()


def _record_as_exported(store_dir: Path, path: str) -> None:
    store = Store.open(store_dir)
    try:
        with store.transaction() as db:
            audit.append(db, "coordinator", "report", "reading-study:demo", after={"files": [path]})
    finally:
        store.close()


@pytest.mark.parametrize("bad", ["=cmd", "@x", "-1", "+1", "dr a", "dr\tb", "dr\nc", "dr\x1bd", ""])
def test_add_readers_refuses_control_characters_spaces_and_formula_starts(hostile_copy, cli, bad):
    store, _ = hostile_copy
    code, _, err = cli("reading-study", "add-readers", "demo", bad, "--store", store)
    assert code != 0 and "reader id" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("reading-study", "create", bad or " ", "--store", store)
    assert code != 0 and "reading study name" in err, err


def test_add_readers_says_already_a_reader_for_a_repeat(hostile_copy, cli):
    store, _ = hostile_copy
    code, out, err = cli("reading-study", "add-readers", "demo", "$\\foo$", "dr-new", "--store", store)
    assert code == 0, err
    assert "added 1 reader" in out and "$\\foo$ is already a reader" in out, out


def test_add_readers_names_the_role_a_repeated_id_has(hostile_copy, cli):
    """An adjudicator added again was said to be "already a reader"; a reader added as adjudicator changes role."""
    store, _ = hostile_copy
    assert cli("reading-study", "add-readers", "demo", "dr-judge", "--adjudicator", "--store", store)[0] == 0
    code, out, err = cli("reading-study", "add-readers", "demo", "dr-judge", "--adjudicator", "--store", store)
    assert code == 0 and "dr-judge is already an adjudicator of demo" in out, out + err
    code, out, err = cli("reading-study", "add-readers", "demo", "dr-new2", "--store", store)
    code, out, err = cli("reading-study", "add-readers", "demo", "dr-new2", "--adjudicator", "--store", store)
    assert code == 0 and "dr-new2 was a reader of demo and is now an adjudicator" in out, out + err


def test_read_import_of_a_reader_export_says_it_is_a_blinded_record_not_re_importable(hostile_copy, tmp_path, cli):
    store, _ = hostile_copy
    exported = tmp_path / "mine.json"
    code, _, err = cli("reading-study", "export", "demo", "--reader", "evil<i>", "--out", exported, "--store", store)
    assert code == 0, err
    code, _, err = cli("read", "import", exported, "--store", store)
    assert code != 0
    assert "is a reading code of reading study demo" in err and "cannot be imported back" in err, err


def test_unblinded_tables_name_each_column_once(hostile_copy, tmp_path, cli):
    store, key = hostile_copy
    code, _, err = cli("reading-study", "export-unblinded", "demo", "--link-key", key, "--out", tmp_path / "u",
                       "--store", store)
    assert code == 0, err
    for name in ("reads.csv", "lesions.csv"):
        header = _cells(tmp_path / "u" / name)[0]
        assert len(header) == len(set(header)) and "reading_code" in header, header

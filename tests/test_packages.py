"""De-identified reading packages: nothing identifying inside, intervals and UIDs kept, reads come back.

The source studies carry identifiers everywhere a hospital puts them (names and
their parts, ids, birth dates, accession, institution, physicians, UIDs,
descriptions with a name inside, a private tag, an overlay, folder names with
the patient's name); every byte of every package file, and every file and
folder name, is searched for each of them.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pydicom
import pytest

from cno_annotate import packages
from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession, list_reads, load_read
from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store, audit
from tests.voxels import voxel_at

PATIENTS = {
    "wolfgang": {"PatientName": "Testperson^Wolfgang^Amadeus", "PatientID": "HOSP778812Q",
                 "PatientBirthDate": "20140307", "OtherPatientIDs": "SVNR4471930", "folder": "Testperson_Wolfgang",
                 "visits": {"20240110": ("ACCX90317", "ACCX90318"), "20240710": ("ACCX91555", "ACCX91556")}},
    "henrietta": {"PatientName": "Quackenbusch^Henrietta", "PatientID": "KLIN553901Z",
                  "PatientBirthDate": "20120921", "OtherPatientIDs": "SVNR8820417", "folder": "Quackenbusch Henrietta",
                  "visits": {"20240301": ("ACCX77120", "ACCX77121")}},
}
STAFF = {"ReferringPhysicianName": "Drosselmeyer^Clarissa", "PerformingPhysicianName": "Pfefferkorn^Hubertus",
         "OperatorsName": "Zwiebelfisch^Annegret", "InstitutionName": "Kinderklinik Musterhausen",
         "InstitutionAddress": "Lindenallee 17 Musterhausen", "StationName": "MRSTATIONBLAU"}
VISIT_DAYS = (date(2024, 7, 10) - date(2024, 1, 10)).days


def _spellings(dicom_date: str) -> list[str]:
    y, m, d = dicom_date[:4], dicom_date[4:6], dicom_date[6:]
    return [dicom_date, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"]


def _identify(path: Path, patient: dict, visit_date: str, accession: str) -> None:
    """Give one generated file the identifiers a hospital's header carries."""
    ds = pydicom.dcmread(path)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs"):
        setattr(ds, key, patient[key])
    for key, value in STAFF.items():
        setattr(ds, key, value)
    family, given = patient["PatientName"].split("^")[:2]
    ds.PatientSex = "M"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = visit_date
    ds.AccessionNumber = accession
    ds.StudyID = accession[-5:]
    ds.StudyDescription = f"WB-MRI {given} {family} geb. {_spellings(patient['PatientBirthDate'])[2]}"
    ds.SeriesDescription = f"{ds.SeriesDescription} {family.upper()} {patient['PatientBirthDate'][:4]}-" \
                           f"{patient['PatientBirthDate'][4:6]}-{patient['PatientBirthDate'][6:]}"
    ds.RequestedProcedureDescription = f"CNO follow-up {family}"
    block = ds.private_block(0x0029, "HOSPITAL PRIVATE", create=True)
    block.add_new(0x01, "LO", f"{family} {patient['PatientID']}")
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000022, "LO", f"overlay of {family}")
    ds.add_new(0x60003000, "OW", b"\x01\x02")
    ds.add_new(0x50000005, "US", 2)  # a retired curve
    ds.save_as(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A coordinator store with three visits of two patients, a reading study and two readers' packages."""
    root = tmp_path_factory.mktemp("site")
    source = root / "PACS export"
    seed = 10
    for patient in PATIENTS.values():
        for visit_date, (accession, _) in patient["visits"].items():
            folder = source / patient["folder"] / f"{patient['PatientName'].split('^')[0]} {visit_date}"
            generate_study(folder, StudyPlan(stations=2, slices=3, matrix=24, seed=seed))
            seed += 1
            for path in folder.rglob("*"):
                if path.is_file() and path.name != "ground_truth.json":
                    _identify(path, patient, visit_date, accession)
            (folder / "ground_truth.json").unlink(missing_ok=True)
    store = Store.open(root / "coordinator")
    import_paths(store, [source])
    rs.create(store, "trial", reveal_timepoints=True)
    rs.add_cases(store, "trial", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "trial", ["dr-a", "dr-b"])
    rs.assign(store, "trial")
    built = {reader: packages.build(store, "trial", reader, root / f"package-{reader}") for reader in ("dr-a", "dr-b")}
    store.db.execute("VACUUM INTO ?", (str(root / "pristine.sqlite"),))  # before any test collects
    yield {"root": root, "source": source, "store": store, "packages": built}
    store.close()


def _identifiers(site) -> set[str]:
    """Every identifying string of the source studies."""
    found: set[str] = set()
    for patient in PATIENTS.values():
        name = patient["PatientName"]
        found.update([name, name.replace("^", " "), *name.split("^"), patient["PatientID"], patient["OtherPatientIDs"],
                      patient["folder"], *_spellings(patient["PatientBirthDate"])])
        for visit_date, accessions in patient["visits"].items():
            found.update([*accessions, *_spellings(visit_date)])
    for value in STAFF.values():
        found.update([value, value.replace("^", " "), *value.replace("^", " ").split()])
    store = site["store"]
    for study in store.studies():
        found.update([study.study_uid, study.description])
    for row in store.db.execute("SELECT series_uid, attributes FROM dicom_series"):
        found.add(row["series_uid"])
        description = json.loads(row["attributes"]).get("SeriesDescription")
        if description:
            found.add(description)
    found.update(r[0] for r in store.db.execute("SELECT DISTINCT sop_uid FROM images"))
    found.update([str(site["source"]), site["source"].name])
    return {f for f in found if f and len(f) >= 4}


def test_no_byte_of_a_package_holds_an_identifier(site):
    identifiers = _identifiers(site)
    assert len(identifiers) > 60  # names, parts, ids, dates, UIDs of 3 studies and their series and images
    source = next(p for p in site["source"].rglob("*") if p.is_file()).read_bytes()
    assert all(i.encode() in source for i in ("Testperson", "HOSP778812Q", "20140307", "Pfefferkorn"))  # the scan finds
    for report in site["packages"].values():
        files = [p for p in report.folder.rglob("*")]
        assert any(p.suffix == ".dcm" for p in files) and any(p.name == "store.sqlite" for p in files)
        assert (report.folder / "manifest.json").is_file()
        names = "\n".join(str(p.relative_to(report.folder)) for p in files)
        blobs = {str(p.relative_to(report.folder)): p.read_bytes() for p in files if p.is_file()}
        for identifier in identifiers:
            for form in {identifier, identifier.upper(), identifier.lower()}:
                assert form not in names, f"{form!r} in a file or folder name"
                needle = form.encode("utf-8")
                for name, blob in blobs.items():
                    assert needle not in blob, f"{form!r} found in {name}"


def test_package_dicom_is_deidentified_by_the_profile(site):
    report = site["packages"]["dr-a"]
    ds = pydicom.dcmread(next(report.folder.rglob("*.dcm")))
    code = ds.PatientID
    assert code.startswith("CNO-") and str(ds.PatientName) == code
    assert ds.PatientIdentityRemoved == "YES" and ds.BurnedInAnnotation == "NO"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113105", "113107"]
    assert not any(e.tag.is_private for e in ds) and not any(e.tag.group in (0x5000, 0x6000) for e in ds)
    assert ds.AccessionNumber == "" and "InstitutionName" not in ds and "OtherPatientIDs" not in ds
    assert ds.PatientBirthDate == "" and ds.PatientSex == ""  # the study does not show age and sex
    assert ds.SeriesDescription in ("t2_tirm_cor_wb", "t1_tse_cor_wb")  # cleaned, still tells the sequence


def _case_dates(report, store) -> dict[str, str]:
    out = {}
    for folder in (report.folder / "images").iterdir():
        out[folder.name] = pydicom.dcmread(next(folder.rglob("*.dcm"))).StudyDate
    return out


def test_intervals_between_visits_of_one_patient_survive(site):
    store = site["store"]
    by_code = {c.reading_code: c for c in rs.cases(store, "trial")}
    studies = {s.study_uid: s for s in store.studies()}
    dates = _case_dates(site["packages"]["dr-a"], store)
    wolfgang = sorted((studies[by_code[code].study_uid].study_date, dates[code]) for code in dates
                      if studies[by_code[code].study_uid].patient_id == "HOSP778812Q")
    assert len(wolfgang) == 2
    (first_source, first), (second_source, second) = wolfgang
    as_date = lambda text: date(int(text[:4]), int(text[4:6]), int(text[6:]))  # noqa: E731
    assert (as_date(second) - as_date(first)).days == VISIT_DAYS
    assert first != first_source and second != second_source
    assert _case_dates(site["packages"]["dr-b"], store) == dates  # the same offset in every package


def _uids(report) -> dict[str, set]:
    out: dict[str, set] = {}
    for path in (report.folder / "images").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        out.setdefault(path.parts[-3], set()).update(
            {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID})
    return out


def test_uids_are_replaced_the_same_way_in_every_package(site):
    a, b = _uids(site["packages"]["dr-a"]), _uids(site["packages"]["dr-b"])
    assert a == b and len(a) == 3
    originals = {r[0] for r in site["store"].db.execute("SELECT sop_uid FROM images")}
    assert not originals & set().union(*a.values())
    stored = dict(site["store"].db.execute("SELECT package_uid, source_uid FROM package_uids"))
    assert set().union(*a.values()) <= set(stored)  # the mapping is on the coordinator's side


def test_the_reader_store_holds_only_that_readers_worklist(site):
    report = site["packages"]["dr-a"]
    copy = Store.open(report.folder / "store")
    try:
        assert [r[0] for r in copy.db.execute("SELECT reader FROM rs_readers")] == ["dr-a"]
        assert {r[0] for r in copy.db.execute("SELECT reader FROM rs_worklists")} == {"dr-a"}
        assert [e["reading_code"] for e in rs.worklist(copy, "trial", "dr-a")] == \
            [e["reading_code"] for e in rs.worklist(site["store"], "trial", "dr-a")]
        assert copy.db.execute("SELECT COUNT(*) FROM package_uids").fetchone()[0] == 0
        assert copy.db.execute("SELECT COUNT(*) FROM package_secrets").fetchone()[0] == 0
    finally:
        copy.close()
    manifest = json.loads((report.folder / "manifest.json").read_text())
    assert (manifest["reading_study"], manifest["reader"], manifest["schema_version"]) == \
        ("trial", "dr-a", "reading-package-1.0.0")
    assert manifest["package_id"] == report.package_id and len(manifest["content_hash"]) == 64
    assert sorted(p.name for p in (report.folder / "scheme").iterdir()) == ["cno-sites-2.0.0.json",
                                                                              "rai-cromris-2.0.0.json"]


@pytest.fixture
def moved_package(site, tmp_path):
    """dr-a's package copied elsewhere (as a reader receives it), with one submitted read and one draft."""
    folder = tmp_path / "received" / "package"
    shutil.copytree(site["packages"]["dr-a"].folder, folder)
    package = packages.open_package(folder)
    store = Store.open(package.store_root)
    codes = [e["reading_code"] for e in rs.worklist(store, "trial", "dr-a")]
    for n, code in enumerate(codes[:2]):
        uid = rs.study_uid_of(store, "trial", code)
        session = ReadSession.open_or_create(store, uid, "dr-a", reading_study="trial",
                                             scheme_id="rai-cromris", scheme_version="2.0.0")
        series = store.volumes(uid)[-1].volume_id
        lesion = session.add_lesion((-70.0, 0.0, -400.0), series, voxel_at(store, series, (-70.0, 0.0, -400.0)),
                                    site_id="femur.distal", side="R")
        session.set_grade(lesion, "marrow_hyperintensity", 2)
        if n == 0:
            session.submit()
    store.close()
    return package


def test_collect_brings_the_reads_back_under_the_original_uids_once(site, moved_package, tmp_path, cli):
    store = site["store"]
    results = tmp_path / "results-dr-a.json"
    code, out, err = cli("reading-study", "export-results", "--package", moved_package.folder, "--out", results)
    assert code == 0 and "wrote 2 reads of dr-a" in out, err
    text = results.read_text()
    assert all(i not in text for i in ("HOSP778812Q", "Testperson"))
    code, out, err = cli("reading-study", "collect", "trial", results, "--store", store.root)
    assert code == 0 and "collected 2 new reads" in out, err
    reads = [load_read(store, r["read_id"]) for r in list_reads(store, reader="dr-a", reading_study="trial")]
    assert sorted(r.status for r in reads) == ["draft", "submitted"]
    studies = {s.study_uid for s in store.studies()}
    series = {v for s in studies for volume in store.volumes(s) for v in (volume.volume_id, volume.series_uid)}
    for read in reads:
        assert read.study_uid in studies and read.lesions[0].series_uid in series
        assert read.lesions[0].grades == {"marrow_hyperintensity": 2}
    assert audit.verify(store.db).ok
    entries = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    code, out, err = cli("reading-study", "collect", "trial", results, "--store", store.root)
    assert code == 0 and "already collected, nothing changed (2 reads of dr-a unchanged)" in out
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == entries


def _signed_copy(results: Path, tmp_path: Path, change) -> Path:
    data = json.loads(results.read_text())
    change(data)
    out = tmp_path / f"changed-{len(list(tmp_path.iterdir()))}.json"
    out.write_text(json.dumps(data))
    return out


def test_collect_refuses_foreign_tampered_and_unissued_results(site, moved_package, tmp_path, cli):
    store = site["store"]
    results = tmp_path / "results.json"
    packages.export_results(moved_package, results)
    before = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]

    def refused(path, *extra) -> str:
        code, out, err = cli("reading-study", "collect", *extra, path, "--store", store.root)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "the file was refused" in err, err
        return err

    def grade(data):
        data["document"]["reads"][0]["lesions"][0]["grades"]["marrow_hyperintensity"] = 1

    assert "changed after it was exported" in refused(_signed_copy(results, tmp_path, grade), "trial")
    assert "not issued by this store" in refused(
        _signed_copy(results, tmp_path, lambda d: d.update(package_id="0" * 32)), "trial")
    assert "issued to 'dr-a', not 'dr-b'" in refused(results, "trial", "--reader", "dr-b")
    rs.create(store, "other-trial")
    rs.add_cases(store, "other-trial", [s.study_uid for s in store.studies()][:1])
    rs.add_readers(store, "other-trial", ["dr-a"])
    rs.assign(store, "other-trial")
    other = packages.build(store, "other-trial", "dr-a", tmp_path / "other-package")
    other_results = tmp_path / "other-results.json"
    packages.export_results(packages.open_package(other.folder), other_results)
    assert "belongs to reading study 'other-trial', not 'trial'" in refused(other_results, "trial")
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == before + 5  # other-trial's create, cases, readers, worklists, package


def test_package_refusals_are_one_line(site, tmp_path, cli):
    store = site["store"]
    code, _, err = cli("reading-study", "package", "trial", "--reader", "dr-a", "--out",
                       site["packages"]["dr-a"].folder, "--store", store.root)
    assert code == 1 and "exists and is not an empty folder" in err
    code, _, err = cli("reading-study", "package", "trial", "--reader", "dr-x", "--out", tmp_path / "x",
                       "--store", store.root)
    assert code == 1 and "not a reader" in err and not (tmp_path / "x").exists()
    with pytest.raises(CnoError, match="not a reading package"):
        packages.open_package(tmp_path)


@pytest.mark.gui
def test_the_viewer_opens_a_package_in_reader_mode_only(site, tmp_path, qtbot):
    pytest.importorskip("PySide6", reason="the viewer needs the ui extra")
    import re

    from cno_annotate_ui.app import _package_at
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QDockWidget, QLabel

    folder = tmp_path / "at the reader's"
    shutil.copytree(site["packages"]["dr-a"].folder, folder)
    package = _package_at(folder / "store")  # opening the package's store finds the package too
    assert package is not None and (package.reader, package.reading_study) == ("dr-a", "trial")
    window = MainWindow(package.store_root, reader=package.reader, reading_study=package.reading_study,
                        package=package.folder)
    window.resize(1300, 850)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=30000):
        window.open_next_case()
    assert [d.windowTitle() for d in window.findChildren(QDockWidget)] == ["Worklist", "Lesions", "Bone units"]
    rows = [window.study_list.item(n).text() for n in range(window.study_list.count())]
    statuses = ["opened", "not started", "not started"]  # the case the window opened, then the others
    assert len(rows) == 3 and all(re.fullmatch(rf"\s*\d\. CNO-\d{{4}}  {status}\n\s+\(P-\d{{3}} tp \d/\d\)", r)
                                  for r, status in zip(rows, statuses, strict=True)), rows
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_M)  # from where the keyboard lands at open
    assert window.mark_action.isChecked()
    view = window.panels["left"].view
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.rect().center())
    qtbot.waitUntil(lambda: window.read_session is not None and len(window.read_session.read.lesions) == 1,
                    timeout=3000)
    current = window.study_list.currentItem().text()
    assert f"{window.current_code}  draft" in current, current  # the read exists from the first edit on
    window.grab().save(str(tmp_path / "package-viewer.png"))
    shown = [window.windowTitle(), *rows, *(label.text() for label in window.findChildren(QLabel)),
             *window.panels["left"].view.overlay_texts(), *window.panels["right"].view.overlay_texts()]
    identifiers = _identifiers(site)
    assert not [t for t in shown if any(i.lower() in t.lower() for i in identifiers)]
    assert "Export results…" in [a.text() for a in window.findChildren(type(window.mark_action))]
    written = window.export_results(tmp_path / "results.json")
    data = json.loads(written.read_text())
    assert data["reader"] == "dr-a" and len(data["document"]["reads"]) == 1
    assert "send this file to the coordinator" in window.statusBar().currentMessage()
    window.close()


def test_a_package_refuses_any_other_mode(site, tmp_path, cli):
    pytest.importorskip("PySide6", reason="the viewer needs the ui extra")
    from cno_annotate_ui.app import run_viewer

    folder = site["packages"]["dr-a"].folder
    with pytest.raises(CnoError, match="reader mode only"):
        run_viewer(folder / "store", "CNO-0001", False, None)
    with pytest.raises(CnoError, match="reader mode only"):
        run_viewer(folder, None, False, None, reader="dr-b")
    code, out, err = cli("view", "--package", folder, "--reading-study", "other")
    assert code == 2 and "a package opens in reader mode only" in err and len(err.strip().splitlines()) == 1


def test_patient_characteristics_keep_the_age_and_burned_in_images_stay_out():
    from pydicom.dataset import Dataset

    from cno_annotate.deid import Replacements, deidentify

    source = Dataset()
    source.file_meta = pydicom.dataset.FileMetaDataset()
    source.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    source.SOPClassUID, source.SOPInstanceUID = pydicom.uid.MRImageStorage, "1.2.3.4"
    source.PatientName, source.PatientID, source.PatientSex = "Testperson^Wolfgang", "HOSP778812Q", "M"
    source.PatientBirthDate, source.StudyDate = "20140307", "20240110"
    source.AcquisitionDateTime = "20240110093000.000000+0100"
    shown = deidentify(source, Replacements("CNO-0001", -400, lambda uid: "2.25.1", patient_characteristics=True))
    hidden = deidentify(source, Replacements("CNO-0001", -400, lambda uid: "2.25.1"))
    assert (shown.PatientBirthDate, shown.StudyDate, shown.PatientSex) == ("20130131", "20221206", "M")
    assert shown.AcquisitionDateTime == "20221206093000.000000+0100"
    assert (hidden.PatientBirthDate, hidden.PatientSex) == ("", "")
    assert "113108" in [c.CodeValue for c in shown.DeidentificationMethodCodeSequence]
    source.BurnedInAnnotation = "YES"
    with pytest.raises(CnoError, match="left out: BurnedInAnnotation is YES"):
        deidentify(source, Replacements("CNO-0001", -400, lambda uid: "2.25.1"))


def test_collecting_results_without_reads_says_so(site, tmp_path, cli):
    results = tmp_path / "empty.json"
    packages.export_results(packages.open_package(site["packages"]["dr-b"].folder), results)
    code, out, err = cli("reading-study", "collect", "trial", results, "--store", site["store"].root)
    assert code == 0 and "holds no reads yet (dr-b" in out, err


def test_without_revealed_timepoints_each_case_has_its_own_offset(site, tmp_path):
    store = site["store"]
    rs.create(store, "blind")
    rs.add_cases(store, "blind", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "blind", ["dr-a"])
    rs.assign(store, "blind")
    report = packages.build(store, "blind", "dr-a", tmp_path / "blind-package")
    secret = bytes.fromhex(store.db.execute("SELECT secret FROM package_secrets WHERE reading_study = 'blind'")
                           .fetchone()[0])
    studies = {s.study_uid: s.study_date for s in store.studies()}
    as_date = lambda text: date(int(text[:4]), int(text[4:6]), int(text[6:]))  # noqa: E731
    for case in rs.cases(store, "blind"):
        shifted = pydicom.dcmread(next((report.folder / "images" / case.reading_code).rglob("*.dcm"))).StudyDate
        moved = (as_date(studies[case.study_uid]) - as_date(shifted)).days
        assert moved == packages.offset_days(secret, case.reading_code)  # keyed by the case, not the patient
    copy = Store.open(report.folder / "store")
    try:
        assert all(c.patient_code == c.reading_code for c in rs.cases(copy, "blind"))  # no grouping leaks
    finally:
        copy.close()


@pytest.mark.gui
def test_export_results_from_the_toolbar_and_ctrl_e_writes_the_file(site, tmp_path, qtbot, monkeypatch):
    pytest.importorskip("PySide6", reason="the viewer needs the ui extra")
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QFileDialog, QToolButton

    folder = tmp_path / "package"
    shutil.copytree(site["packages"]["dr-a"].folder, folder)
    package = packages.open_package(folder)
    chosen = [tmp_path / "from-ctrl-e.json", tmp_path / "from-the-button.json"]
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(chosen[0]), "Results (*.json)"))
    window = MainWindow(package.store_root, reader=package.reader, reading_study=package.reading_study,
                        package=package.folder)
    window.resize(1280, 800)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=30000):
        window.open_next_case()
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_E, Qt.ControlModifier)  # from where the keyboard lands
    qtbot.waitUntil(chosen[0].is_file, timeout=5000)
    assert json.loads(chosen[0].read_text())["reader"] == "dr-a"
    assert f"to {chosen[0]}" in window.statusBar().currentMessage()
    chosen.pop(0)
    button = next(b for b in window.findChildren(QToolButton) if b.defaultAction() is window.export_action)
    window.grab().save(str(tmp_path / "export-at-1280x800.png"))
    assert button.isVisible() and window.rect().contains(button.geometry().translated(
        button.mapTo(window, button.rect().topLeft()) - button.geometry().topLeft()))
    qtbot.mouseClick(button, Qt.LeftButton)
    qtbot.waitUntil(chosen[0].is_file, timeout=5000)
    assert f"to {chosen[0]}" in window.statusBar().currentMessage()
    window.close()


@pytest.fixture
def coordinator(site, tmp_path):
    """A copy of the coordinator's store as it was when the packages were made (no read collected yet)."""
    folder = tmp_path / "coordinator"
    folder.mkdir()
    shutil.copyfile(site["root"] / "pristine.sqlite", folder / "store.sqlite")
    store = Store.open(folder)
    yield store
    store.close()


def _read_revision(store, reader="dr-a") -> dict[str, int]:
    return {r["read_id"]: r["revision"] for r in list_reads(store, reader=reader, reading_study="trial")}


def test_an_older_results_file_changes_nothing(coordinator, moved_package, tmp_path, cli):
    store = coordinator
    older, newer = tmp_path / "older.json", tmp_path / "newer.json"
    packages.export_results(moved_package, older)
    package_store = Store.open(moved_package.store_root)
    draft = next(r for r in list_reads(package_store, reader="dr-a", reading_study="trial") if r["status"] == "draft")
    session = ReadSession.open_or_create(package_store, draft["study_uid"], "dr-a", reading_study="trial",
                                         scheme_id="rai-cromris", scheme_version="2.0.0")
    session.set_grade(session.read.lesions[0].lesion_id, "marrow_hyperintensity", 1)
    package_store.close()
    packages.export_results(moved_package, newer)
    code, out, err = cli("reading-study", "collect", "trial", newer, "--store", store.root)
    assert code == 0, err
    collected = _read_revision(store)
    entries = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    code, out, err = cli("reading-study", "collect", "trial", older, "--store", store.root)
    assert code == 0 and "older than what was collected; nothing changed" in out, out + err
    assert _read_revision(store) == collected
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == entries


def test_a_multi_file_collect_reports_each_file(coordinator, moved_package, tmp_path, cli):
    store = coordinator
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    packages.export_results(moved_package, good)
    bad.write_text("{}")
    code, out, err = cli("reading-study", "collect", "trial", good, bad, "--store", store.root)
    assert code == 1
    assert f"{good}: collected" in out and f"{bad}: not a reading-package results file" in err
    assert "nothing was collected" not in out + err
    assert "refused" in err and len(list_reads(store, reader="dr-a", reading_study="trial")) >= 2


@pytest.mark.parametrize("command", [
    ("reading-study", "add-readers", "trial", "dr-z"),
    ("reading-study", "assign", "trial"),
    ("reading-study", "move", "trial", "CNO-0001", "--reader", "dr-a"),
    ("reading-study", "package", "trial", "--reader", "dr-a", "--out", "{tmp}/again"),
    ("reading-study", "export-unblinded", "trial", "--link-key", "{tmp}/key.sqlite", "--out", "{tmp}/unblinded"),
    ("export-csv", "--out", "{tmp}/csv"),
    ("reading-study", "create", "another"),
    ("reading-study", "collect", "trial", "{tmp}/results.json"),
])
def test_a_reader_store_refuses_coordinator_commands(site, tmp_path, cli, command):
    folder = tmp_path / "package"
    shutil.copytree(site["packages"]["dr-a"].folder, folder)
    package = packages.open_package(folder)
    packages.export_results(package, tmp_path / "results.json")
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code, out, err = cli(*args, "--store", package.store_root)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert "this is a reader's package store" in err and "only the coordinator's store can" in err
    assert not (tmp_path / "again").exists() and not (tmp_path / "unblinded").exists()
    assert not (tmp_path / "csv").exists()
    store = Store.open(package.store_root)
    try:  # the database itself refuses, whatever program writes to it
        with pytest.raises(Exception, match="reader's package store"):
            rs.add_readers(store, "trial", ["dr-z"])
    finally:
        store.close()


def test_a_package_issued_again_carries_the_readers_collected_reads(site, coordinator, moved_package, tmp_path,
                                                                   cli):
    store = coordinator
    results = tmp_path / "results.json"
    packages.export_results(moved_package, results)
    assert cli("reading-study", "collect", "trial", results, "--store", store.root)[0] == 0
    exported = {r["read_id"]: r for r in json.loads(results.read_text())["document"]["reads"]}
    again = packages.build(store, "trial", "dr-a", tmp_path / "again")
    copy = Store.open(again.folder / "store")
    try:
        carried = {r["read_id"]: r for r in list_reads(copy, reader="dr-a", reading_study="trial")}
        assert set(exported) <= set(carried)
        for read_id, read in exported.items():  # as the reader left them, under the same stand-in UIDs
            assert (carried[read_id]["status"], carried[read_id]["revision"], carried[read_id]["study_uid"]) == \
                (read["status"], read["revision"], read["study_uid"])
        submitted = next(r for r in exported.values() if r["status"] == "submitted")
        session = ReadSession.open_or_create(copy, submitted["study_uid"], "dr-a", reading_study="trial",
                                             scheme_id="rai-cromris", scheme_version="2.0.0")
        assert session.read.status == "submitted"
        with pytest.raises(CnoError):  # still locked
            session.set_grade(session.read.lesions[0].lesion_id, "marrow_hyperintensity", 1)
    finally:
        copy.close()
    assert not [i for i in _identifiers(site) if i in (again.folder / "store" / "store.sqlite").read_bytes().decode(
        "latin-1")]
    again_results = tmp_path / "again.json"
    packages.export_results(packages.open_package(again.folder), again_results)
    code, out, err = cli("reading-study", "collect", "trial", again_results, "--store", store.root)
    assert code == 0 and "nothing changed" in out, out + err


def test_cleaned_descriptions_keep_no_dangling_lead_ins(site):
    from cno_annotate.deid import clean

    report = site["packages"]["dr-a"]
    described = {pydicom.dcmread(p).StudyDescription for p in (report.folder / "images").rglob("*.dcm")}
    assert described == {"WB-MRI"}  # was 'WB-MRI Wolfgang Testperson geb. 07.03.2014'
    assert clean("WB-MRT Müller, Zoë geb. 07.03.2014 vom 10.01.2024", ["Müller", "Zoë"]) == "WB-MRT"
    assert clean("Knee MRI of Wu Li born 2013/01/01", ["Wu Li"]) == "Knee MRI"
    assert clean("STIR cor Testperson", ["Testperson"]) == "STIR cor"


def test_header_warnings_go_into_the_package_report(tmp_path, cli):
    import warnings

    source = tmp_path / "source"
    generate_study(source, StudyPlan(stations=1, slices=2, matrix=16, seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long value is the point of the test
        for path in (p for p in source.rglob("*") if p.is_file() and p.name != "ground_truth.json"):
            ds = pydicom.dcmread(path)
            ds.PatientName = "Quackenbusch^Henrietta"
            ds.StudyDescription = "WB-MRT Quackenbusch, Henrietta geb. 21.09.2012 vom 01.03.2024 Kinderklinik"
            ds.save_as(path)
    store = Store.open(tmp_path / "coordinator")
    try:
        import_paths(store, [source])
        rs.create(store, "long")
        rs.add_cases(store, "long", [s.study_uid for s in store.studies()])
        rs.add_readers(store, "long", ["dr-a"])
        rs.assign(store, "long")
    finally:
        store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw pydicom warning on the terminal fails the test
        code, out, err = cli("reading-study", "package", "long", "--reader", "dr-a", "--out", tmp_path / "package",
                             "--store", tmp_path / "coordinator")
    assert code == 0 and err == "", err
    assert "note: CNO-0001: source header: The value length (74) exceeds the maximum length of 64 allowed for VR LO" \
        in out, out


# -- cases only opened (looked at) in the package, and the time spent looking -------------------------------------
def _progress(store, reader="dr-a") -> dict:
    return next(p for p in rs.progress(store, "trial") if p["reader"] == reader)


def _look(package, code: str, seconds: float) -> None:
    """The reader opens a case of the package and looks at it for ``seconds`` of active time, changing nothing."""
    store = Store.open(package.store_root)
    try:
        session = ReadSession.open_or_create(store, rs.study_uid_of(store, "trial", code), "dr-a",
                                             reading_study="trial", scheme_id="rai-cromris", scheme_version="2.0.0")
        session.add_reading_time(seconds)
    finally:
        store.close()


def test_collect_brings_back_the_cases_only_opened_and_their_looked_at_time(coordinator, moved_package, tmp_path,
                                                                          cli):
    store = coordinator
    package_store = Store.open(moved_package.store_root)
    codes = [e["reading_code"] for e in rs.worklist(package_store, "trial", "dr-a")]
    package_store.close()
    _look(moved_package, codes[2], 40.0)  # opened, looked at, left without a change
    older, newer = tmp_path / "older.json", tmp_path / "newer.json"
    packages.export_results(moved_package, older)
    code, out, err = cli("reading-study", "collect", "trial", older, "--store", store.root)
    assert code == 0 and "collected 2 new reads" in out and "1 case opened without a read" in out, out + err
    progress = _progress(store)
    assert (progress["not started"], progress["opened"], progress["draft"], progress["submitted"]) == (0, 1, 1, 1)
    assert progress["active_seconds"] == pytest.approx(40.0)
    assert rs.worklist(store, "trial", "dr-a")[2]["status"] == "opened"
    entry = store.db.execute("SELECT detail FROM audit WHERE action = 'collect' ORDER BY seq DESC LIMIT 1").fetchone()
    assert {"reading_code": codes[2], "looked_seconds": 40.0} in json.loads(entry[0])["after"]["opened"]
    assert audit.verify(store.db).ok
    entries = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    code, out, err = cli("reading-study", "collect", "trial", older, "--store", store.root)  # again: nothing
    assert code == 0 and "already collected, nothing changed" in out, out + err
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == entries
    _look(moved_package, codes[2], 5.0)  # the reader looks again later
    packages.export_results(moved_package, newer)
    assert cli("reading-study", "collect", "trial", newer, "--store", store.root)[0] == 0
    assert _progress(store)["active_seconds"] == pytest.approx(45.0)
    assert cli("reading-study", "collect", "trial", older, "--store", store.root)[0] == 0  # an older file: kept
    assert _progress(store)["active_seconds"] == pytest.approx(45.0)
    assert _progress(store, "dr-b")["opened"] == 0
    again = packages.build(store, "trial", "dr-a", tmp_path / "again")  # a lost folder: the case stays opened
    copy = Store.open(again.folder / "store")
    try:
        assert (_progress(copy)["opened"], _progress(copy)["active_seconds"]) == (1, pytest.approx(45.0))
    finally:
        copy.close()
    packages.export_results(packages.open_package(again.folder), tmp_path / "again.json")
    code, out, err = cli("reading-study", "collect", "trial", tmp_path / "again.json", "--store", store.root)
    assert code == 0 and "nothing changed" in out, out + err


def _resigned(results: Path, package, tmp_path: Path, change) -> Path:
    """A results file changed and signed again with the package's key (as a forger holding the package could)."""
    data = json.loads(results.read_text())
    change(data)
    payload = {k: v for k, v in data.items() if k != "signature"}
    data["signature"] = packages._signature(package.manifest["results_key"], payload)
    out = tmp_path / f"resigned-{len(list(tmp_path.iterdir()))}.json"
    out.write_text(json.dumps(data))
    return out


def test_collect_refuses_an_opened_case_outside_the_package_or_a_bad_time(coordinator, moved_package, tmp_path,
                                                                         cli):
    store = coordinator
    package_store = Store.open(moved_package.store_root)
    code = rs.worklist(package_store, "trial", "dr-a")[2]["reading_code"]
    package_store.close()
    _look(moved_package, code, 12.0)
    results = tmp_path / "results.json"
    packages.export_results(moved_package, results)
    before = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    changes = {"not a case of package": lambda d: d["opened"][0].update(study_uid="2.25.1"),
               "looked_seconds: a number of seconds, at least 0": lambda d: d["opened"][0].update(looked_seconds=-3),
               "$.opened: a list": lambda d: d.update(opened={"a": 1})}
    for said, change in changes.items():
        code, out, err = cli("reading-study", "collect", "trial", _resigned(results, moved_package, tmp_path, change),
                             "--store", store.root)
        assert code == 1 and len(err.strip().splitlines()) == 1 and said in err and "refused" in err, err
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == before
    assert store.db.execute("SELECT COUNT(*) FROM rs_opened").fetchone()[0] == 0


def test_time_looked_offline_then_taken_by_the_read_is_exported_once(coordinator, moved_package, tmp_path, cli):
    import csv

    store = coordinator
    package_store = Store.open(moved_package.store_root)
    code = rs.worklist(package_store, "trial", "dr-a")[2]["reading_code"]
    package_store.close()
    _look(moved_package, code, 40.0)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    packages.export_results(moved_package, first)
    assert cli("reading-study", "collect", "trial", first, "--store", store.root)[0] == 0  # opened, 40 s
    package_store = Store.open(moved_package.store_root)
    try:  # the reader comes back to the case and changes it: the read takes the 40 s, then 10 s more
        session = ReadSession.open_or_create(package_store, rs.study_uid_of(package_store, "trial", code), "dr-a",
                                             reading_study="trial", scheme_id="rai-cromris", scheme_version="2.0.0")
        session.mark_unit("skull", "no_lesion")
        session.add_reading_time(10.0)
    finally:
        package_store.close()
    packages.export_results(moved_package, second)
    assert cli("reading-study", "collect", "trial", second, "--store", store.root)[0] == 0
    progress = _progress(store)
    assert (progress["opened"], progress["draft"], progress["active_seconds"]) == (0, 2, pytest.approx(50.0))
    _, printed, _ = cli("reading-study", "progress", "trial", "--json", "--store", store.root)
    assert next(p for p in json.loads(printed) if p["reader"] == "dr-a")["active_seconds"] == pytest.approx(50.0)
    assert cli("read", "export", "--reader", "dr-a", "--out", tmp_path / "reads.json", "--store", store.root)[0] == 0
    assert sorted(r["active_seconds"] for r in json.loads((tmp_path / "reads.json").read_text())["reads"]) == \
        [0.0, 0.0, pytest.approx(50.0)]
    assert cli("export-csv", "--reader", "dr-a", "--out", tmp_path / "csv", "--store", store.root)[0] == 0
    with open(tmp_path / "csv" / "reads.csv", newline="") as f:
        assert sorted(float(r["active_seconds"]) for r in csv.DictReader(f)) == [0.0, 0.0, pytest.approx(50.0)]


def test_collect_leaves_out_a_case_opened_offline_that_was_moved_off_the_readers_worklist(coordinator, moved_package,
                                                                                         tmp_path, cli):
    store = coordinator
    package_store = Store.open(moved_package.store_root)
    code = rs.worklist(package_store, "trial", "dr-a")[2]["reading_code"]
    package_store.close()
    _look(moved_package, code, 30.0)
    results = tmp_path / "results.json"
    packages.export_results(moved_package, results)
    rs.move_case(store, "trial", code, "dr-a")  # the coordinator took it off dr-a's worklist meanwhile
    status, out, err = cli("reading-study", "collect", "trial", results, "--store", store.root)
    assert status == 0 and "collected 2 new reads" in out, err
    assert "1 case opened but no longer on the worklist (not counted)" in out
    assert store.db.execute("SELECT COUNT(*) FROM rs_opened").fetchone()[0] == 0
    assert _progress(store)["opened"] == 0 and audit.verify(store.db).ok


def test_export_results_says_it_carries_the_opened_cases_when_there_are_no_reads(site, tmp_path, cli):
    folder = tmp_path / "only-opened"
    shutil.copytree(site["packages"]["dr-b"].folder, folder)
    package = packages.open_package(folder)
    store = Store.open(package.store_root)
    try:
        for code in [e["reading_code"] for e in rs.worklist(store, "trial", "dr-b")][:2]:
            session = ReadSession.open_or_create(store, rs.study_uid_of(store, "trial", code), "dr-b",
                                                 reading_study="trial", scheme_id="rai-cromris", scheme_version="2.0.0")
            session.add_reading_time(12.0)  # looked at, nothing changed
    finally:
        store.close()
    results = tmp_path / "results.json"
    code, out, err = cli("reading-study", "export-results", "--package", folder, "--out", results)
    assert code == 0 and "wrote 0 reads and 2 opened cases of dr-b" in out, out + err
    assert len(json.loads(results.read_text())["opened"]) == 2

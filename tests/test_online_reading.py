"""Online readers: the coordinator publishes de-identified cases to a study PACS, the reader's viewer fetches them.

A real PostgreSQL (conftest.pg_server) holds the shared store; a real Orthanc with its DICOMweb plugin
(tests/pacs_fixtures.py) is the study PACS. The source studies carry identifiers everywhere a hospital
puts them (tests/test_packages.py); the reader's image cache is scanned byte by byte for each of them.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from cno_annotate import reading_study as rs
from cno_annotate import study_pacs
from cno_annotate.display.session import PRIOR as PRIOR_FRAME
from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.pacs import config
from cno_annotate.pacs.client import open_client
from cno_annotate.pacs.query import StudyQuery
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume
from tests.cli_run import run_cli
from tests.test_packages import PATIENTS, _identifiers, _identify

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
READER, OTHER, ADJUDICATOR = "dr-online", "dr-elsewhere", "dr-online-adj"



@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Three identifying visits of two patients, in folders named after them."""
    root = tmp_path_factory.mktemp("online") / "PACS export"
    seed = 30
    for patient in PATIENTS.values():
        for visit_date, (accession, _) in patient["visits"].items():
            folder = root / patient["folder"] / f"{patient['PatientName'].split('^')[0]} {visit_date}"
            generate_study(folder, StudyPlan(stations=2, slices=4, matrix=24, seed=seed))
            seed += 1
            for path in folder.rglob("*"):
                if path.is_file() and path.name != "ground_truth.json":
                    _identify(path, patient, visit_date, accession)
            (folder / "ground_truth.json").unlink(missing_ok=True)
    return root


@pytest.fixture
def trial(pg_server, pg_database, source):
    """``trial(login)`` -> URL of this test's database: the sources imported, reading study 'online', assigned."""
    url = pg_database()
    database = url.rsplit("/", 1)[1]
    store = Store.open(url)
    import_paths(store, [source])
    rs.create(store, "online", reveal_timepoints=True)
    rs.add_cases(store, "online", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "online", [READER, OTHER])
    rs.add_readers(store, "online", [ADJUDICATOR], role="adjudicator")
    rs.assign(store, "online")
    store.close()
    for flag, login in (("--reader", READER), ("--reader", OTHER), ("--adjudicator", ADJUDICATOR)):
        code, out = run_cli("store", "grant", flag, login, "--store", url)
        assert code == 0, out
        if "password (shown once): " in out:
            pg_server.remember(login, out.rsplit(": ", 1)[1].strip())
    return lambda login="cno_owner": pg_server.plain_url(database, user=login)


def _source_uids(url: str) -> set[str]:
    store = Store.open(url)
    try:
        return {r[0] for r in store.db.execute("SELECT study_uid FROM studies")}
    finally:
        store.close()


def test_published_cases_reach_the_pacs_de_identified_and_a_reader_fetches_and_reads_one(trial, nodes, source):
    code, out = run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())
    assert code == 0, out
    assert "published 3 cases of online to web" in out
    with open_client(config.get_node("web")) as client:
        on_pacs = {s.study_uid for s in client.find_studies(StudyQuery())}
    originals = _source_uids(trial())
    assert not originals & on_pacs  # the PACS never received a source study UID

    reader = Store.open(trial(READER))
    try:
        first = rs.worklist(reader, "online", READER)[0]["reading_code"]
        with open_client(config.get_node("web")) as client:
            cached = study_pacs.fetch_case(reader, "online", first, client)
            again = study_pacs.fetch_case(reader, "online", first, client)
    finally:
        reader.close()
    assert cached.study_uid in on_pacs and cached.report.received > 0
    assert again.report.received == 0 and again.report.already_in_store == cached.report.received  # cached
    cache = Store.open(cached.cache)
    try:
        volumes = cache.volumes(cached.study_uid)
        assert volumes and {s.patient_id for s in cache.studies()} == {first}
        volume = load_volume(cache, volumes[0].volume_id)
        assert np.ptp(volume.array) > 0  # real pixels, readable
    finally:
        cache.close()
    instance = pydicom.dcmread(next(cached.cache.rglob("*.dcm")))
    assert str(instance.PatientName) == first and instance.PatientIdentityRemoved == "YES"


def test_no_byte_of_the_readers_cache_holds_an_identifier_of_the_source(trial, nodes, source):
    assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    reader = Store.open(trial(READER))
    try:
        with open_client(config.get_node("web")) as client:
            fetched = [study_pacs.fetch_case(reader, "online", entry["reading_code"], client)
                       for entry in rs.worklist(reader, "online", READER)]
    finally:
        reader.close()
    assert len(fetched) == 3
    owner = Store.open(trial())
    try:
        identifiers = _identifiers({"store": owner, "source": source})
    finally:
        owner.close()
    assert len(identifiers) > 60
    files = _assert_no_identifier_in(fetched[0].cache, identifiers)
    assert sum(p.suffix == ".dcm" for p in files) >= 3 * 12 and any(p.name == "store.sqlite" for p in files)


def _assert_no_identifier_in(folder, identifiers: set[str]) -> list:
    """Scan every byte, file and folder name under ``folder`` for each identifier (three cases); the files."""
    files = [p for p in folder.rglob("*")]
    names = "\n".join(str(p.relative_to(folder)) for p in files)
    blobs = {str(p.relative_to(folder)): p.read_bytes() for p in files if p.is_file()}
    for identifier in identifiers:
        for form in {identifier, identifier.upper(), identifier.lower()}:
            assert form not in names, f"{form!r} in a file or folder name of the cache"
            needle = form.encode("utf-8")
            for name, blob in blobs.items():
                assert needle not in blob, f"{form!r} found in the cache's {name}"
    return files


def test_a_reader_finds_only_the_cases_of_their_worklist_and_unpublished_cases_are_named(trial, nodes):
    owner = Store.open(trial())
    try:
        codes = [c.reading_code for c in rs.cases(owner, "online")]
        with open_client(config.get_node("web")) as client:
            study_pacs.publish(owner, "online", client, codes=codes[:1])
        owner.db.execute("DELETE FROM rs_worklists WHERE reader = ? AND reading_code = ?", (OTHER, codes[0]))
    finally:
        owner.close()
    reader, other = Store.open(trial(READER)), Store.open(trial(OTHER))
    try:
        with open_client(config.get_node("web")) as client:
            with pytest.raises(CnoError, match=f"{codes[1]} of online is not on the study PACS"):
                study_pacs.fetch_case(reader, "online", codes[1], client)
            with pytest.raises(CnoError, match="not on the study PACS"):  # not on this login's worklist
                study_pacs.fetch_case(other, "online", codes[0], client)
            assert study_pacs.fetch_case(reader, "online", codes[0], client).report.received > 0
        rows = other.db.execute("SELECT reading_code FROM rs_published").fetchall()
        assert rows == []  # raw SQL: the server shows a reader nothing of another reader's cases
    finally:
        reader.close()
        other.close()


def test_publish_audits_each_case_and_a_refused_study_is_said(trial, nodes):
    code, out = run_cli("reading-study", "publish", "nope", "--pacs", "web", "--store", trial())
    assert code != 0 and "nope" in out
    code, out = run_cli("reading-study", "publish", "online", "--pacs", "web", "--code", "CNO-9999", "--store", trial())
    assert code != 0 and "CNO-9999" in out
    assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    owner = Store.open(trial())
    try:
        entries = [json.loads(r[0]) for r in owner.db.execute(
            "SELECT detail FROM audit WHERE action = 'publish' ORDER BY seq")]
        assert sorted(e["after"]["reading_code"] for e in entries) == sorted(
            c.reading_code for c in rs.cases(owner, "online"))
        code, out = run_cli("audit", "verify", "--store", trial())
        assert code == 0, out
    finally:
        owner.close()


@pytest.mark.gui
def test_the_readers_viewer_fetches_a_case_from_the_study_pacs_and_shows_it(trial, nodes, source, qtbot, tmp_path):
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import Qt

    from tests.test_reading_study import _visible_strings

    assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    window = MainWindow(trial(READER), reader=READER, reading_study="online", pacs="web")
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.open_next_case()
    left = window.panels["left"].view
    assert window.session.views["left"].ready
    image = left.grab().toImage()
    image.save(str(tmp_path / "online-reader.png"))
    grey = {image.pixelColor(x, y).lightness() for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(grey) > 20  # an image is painted, not an empty view
    # the reader marks a lesion on the fetched images: the read is on the server, under the reader's login
    window.mark_action.setChecked(True)
    qtbot.mouseClick(left, Qt.LeftButton, pos=left.rect().center())
    qtbot.waitUntil(lambda: window.lesion_panel.lesions.count() == 1, timeout=10000)
    owner = Store.open(trial())
    try:
        reads = owner.db.execute("SELECT reader FROM reads").fetchall()
        identifiers = _identifiers({"store": owner, "source": source})
    finally:
        owner.close()
    assert [r[0] for r in reads] == [READER]
    strings = _visible_strings(window)
    assert window.current_code in " ".join(strings)
    assert [(i, s) for i in identifiers for s in strings if i.lower() in s.lower()] == []
    window.close()


def test_a_readers_viewer_without_the_study_pacs_says_why_and_a_screenshot_run_ends(trial, nodes, qtbot):
    """Without --pacs the case cannot load: the window tells the reader and '--screenshot' does not wait forever."""
    from cno_annotate_ui.main_window import MainWindow

    assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    window = MainWindow(trial(READER), reader=READER, reading_study="online")
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.case_unavailable, timeout=60000) as blocker:
        window.open_next_case()
    assert blocker.args == [window.current_code]
    assert "--pacs NODE" in window.statusBar().currentMessage()
    window.close()


def test_an_online_reader_sees_the_prior_visit_beside_the_current_one(trial, nodes, qtbot):
    """Paired-chronological, online: Prior beside current fetches the prior case from the study PACS and shows it.

    It raised "permission denied for table volumes" (the volumes of the source studies are not the
    reader's) and showed nothing, so no prior lesion was carried forward.
    """
    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate.display.session import PRIOR

    assert run_cli("reading-study", "design", "online", "paired-chronological", "--store", trial())[0] == 0
    assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    window = MainWindow(trial(READER), reader=READER, reading_study="online", pacs="web")
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    later = next(e["reading_code"] for e in rs.worklist(window.store, "online", READER) if e["timepoint"] == 2)
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.open_case(later)
    assert window.comparison.action.isEnabled()
    prior_code = window.comparison.priors[0].reading_code
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.comparison.action.trigger()
    assert window.comparison.active and window.session.views["left"].frame == PRIOR
    assert window.session.views["left"].ready
    prior_volumes = {v.volume_id for v in window.images.volumes(window.image_study_of(window.comparison.prior.study_uid))}
    assert window.panels["left"].series.currentData() in prior_volumes
    assert window.current_code == later and prior_code != later
    window.close()


# -- paired chronological, online: the prior visit beside the follow-up ----------------------------------------
def _paired(trial, publish: bool = True) -> tuple[str, str]:
    """Paired-chronological design (every case published, or none); the codes of a patient's two visits."""
    assert run_cli("reading-study", "design", "online", "paired-chronological", "--store", trial())[0] == 0
    reader = Store.open(trial(READER))
    try:
        entries = rs.worklist(reader, "online", READER)
    finally:
        reader.close()
    later = next(e for e in entries if e["timepoint"] == 2)
    prior = next(e["reading_code"] for e in entries if e["patient_code"] == later["patient_code"]
                 and e["timepoint"] == 1)
    if publish:
        assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    return prior, later["reading_code"]


def _submit_prior_read(trial, code: str) -> None:
    """The reader's own read of the earlier visit, on the server: one lesion on the fetched copy's STIR, submitted."""
    from cno_annotate.annotation.reads import ReadSession

    reader = Store.open(trial(READER))
    try:
        with open_client(config.get_node("web")) as client:
            cached = study_pacs.fetch_case(reader, "online", code, client)
        cache = Store.open(cached.cache)
        try:
            stir = next(v for v in cache.volumes(cached.study_uid) if v.role == "STIR")
            volume = load_volume(cache, stir.volume_id)
        finally:
            cache.close()
        voxel = tuple(int(n) // 2 for n in reversed(volume.shape))
        position = tuple(float(x) for x in volume.index_to_lps(np.asarray(voxel, float)))
        session = ReadSession.open_or_create(reader, rs.study_uid_of(reader, "online", code), READER,
                                             reading_study="online")
        session.add_lesion(position, stir.volume_id, voxel, site_id="femur.distal", side="R")
        session.submit()
        shutil.rmtree(cached.cache)  # read on another computer: the viewer fetches the prior afresh
    finally:
        reader.close()


def _online_window(qtbot, trial, login: str = READER):
    from cno_annotate_ui.main_window import MainWindow

    window = MainWindow(trial(login), reader=login, reading_study="online", pacs="web")
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    qtbot.waitExposed(window)
    return window


def _messages(window) -> list[str]:
    said: list[str] = []
    window.statusBar().messageChanged.connect(lambda text: said.append(text) if text else None)
    return said


@pytest.mark.gui
def test_an_online_reader_sees_the_prior_beside_the_follow_up_with_their_lesions_carried_forward(
        trial, nodes, source, qtbot, tmp_path):
    """Ctrl+P on the follow-up fetches the prior case from the study PACS into the reader's cache and shows it.

    It raised "permission denied for table volumes" (the reader's login selects nothing of the source
    studies on the server) and showed nothing: no prior, no carried-forward lesions.
    """
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from cno_annotate.display.session import PRIOR
    from cno_annotate.registration import PiecewiseTransform

    prior_code, later = _paired(trial)
    _submit_prior_read(trial, prior_code)
    window = _online_window(qtbot, trial)
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.open_case(later)
    comparison = window.comparison
    assert comparison.action.isEnabled() and comparison.prior_box.count() == 1
    said = _messages(window)
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key_P, Qt.ControlModifier)
    assert any(prior_code in m and "%" in m for m in said), said  # the fetch of the prior counts in the status bar
    assert comparison.active and comparison.prior.reading_code == prior_code
    left, right = window.session.views["left"], window.session.views["right"]
    assert left.frame == PRIOR and left.ready and right.ready
    cache = study_pacs.open_cache(window.store)
    try:
        prior_study = {v.volume_id: v.study_uid for v in cache.volumes()}[left.volume.volume_id]
        current_study = {v.volume_id: v.study_uid for v in cache.volumes()}[right.volume.volume_id]
        assert {s.study_uid: s.patient_id for s in cache.studies()}[prior_study] == prior_code
    finally:
        cache.close()
    assert prior_study != current_study
    image = window.panels["left"].view.grab().toImage()
    image.save(str(tmp_path / "online-prior.png"))
    grey = {image.pixelColor(x, y).lightness() for x in range(0, image.width(), 7)
            for y in range(0, image.height(), 7)}
    assert len(grey) > 20  # the prior's image is painted, not an empty view
    window.grab().save(str(tmp_path / "online-prior-window.png"))
    # the reader's own prior read: its lesion is listed in the dock, to be confirmed on the follow-up
    assert comparison.dock is not None and comparison.dock.isVisible()
    [listed] = [comparison.ghost_list.item(n).text() for n in range(comparison.ghost_list.count())]
    assert listed.startswith("prior L1 ") and "femur" in listed.lower() and listed.endswith(" R: ?"), listed
    assert len(window.session.prior_markers) == 1
    comparison.wait(60000)  # the registration of the two copies, in the cache (never on the server)
    qtbot.waitUntil(lambda: comparison.state != "registering", timeout=60000)
    assert comparison.state == "registered", comparison.region_label.text()
    view = window.panels["right"].view
    qtbot.mouseClick(view, Qt.LeftButton, pos=view.rect().center())
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Up, Qt.AltModifier)  # a 1 mm nudge, kept in the cache
    assert "nudged" in comparison.region_label.text()
    kept = list((study_pacs.image_cache(window.store) / "cache" / "registration").glob("*.json"))
    assert any(PiecewiseTransform.from_dict(json.loads(p.read_text())).is_corrected for p in kept)
    qtbot.mouseClick(comparison.ghost_list.viewport(), Qt.LeftButton,
                     pos=comparison.ghost_list.visualItemRect(comparison.ghost_list.item(0)).center())
    qtbot.mouseClick(comparison.outcome_buttons["resolved"], Qt.LeftButton)
    assert "resolved 1" in comparison.counts.text()
    window.close()
    # nothing of the source reached the reader's machine with the prior, its registration included
    owner = Store.open(trial())
    try:
        identifiers = _identifiers({"store": owner, "source": source})
    finally:
        owner.close()
    files = _assert_no_identifier_in(study_pacs.image_cache(window.store), identifiers)
    assert sum(p.suffix == ".dcm" for p in files) >= 2 * 12


@pytest.mark.gui
def test_an_online_adjudicator_sees_the_prior_beside_the_follow_up(trial, nodes, qtbot):
    """The adjudicator's login fetches the prior into their own cache; no read of theirs is carried forward."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    prior_code, later = _paired(trial)
    _submit_prior_read(trial, prior_code)  # the reader's read: not the adjudicator's to carry forward
    window = _online_window(qtbot, trial, ADJUDICATOR)
    assert window.role == "adjudicator"
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.open_case(later)
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key_P, Qt.ControlModifier)
    comparison = window.comparison
    assert comparison.active and comparison.prior.reading_code == prior_code
    assert window.session.views["left"].frame == PRIOR_FRAME and window.session.views["left"].ready
    image = window.panels["left"].view.grab().toImage()
    assert len({image.pixelColor(x, y).lightness() for x in range(0, image.width(), 7)
                for y in range(0, image.height(), 7)}) > 20
    assert comparison.carry is None and (comparison.dock is None or not comparison.dock.isVisible())
    comparison.wait(60000)
    window.close()


@pytest.mark.gui
def test_an_unpublished_prior_or_an_unreachable_pacs_is_said_in_one_line(trial, nodes, qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from cno_annotate.cli import main

    prior_code, later = _paired(trial, publish=False)
    owner = Store.open(trial())
    try:
        with open_client(config.get_node("web")) as client:
            study_pacs.publish(owner, "online", client, codes=[later])  # the follow-up only
    finally:
        owner.close()
    window = _online_window(qtbot, trial)
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.open_case(later)
    comparison = window.comparison
    said = _messages(window)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_P, Qt.ControlModifier)
    qtbot.waitUntil(lambda: any("not on the study PACS" in m for m in said), timeout=60000)
    message = next(m for m in said if "not on the study PACS" in m)
    assert prior_code in message and "\n" not in message and "Traceback" not in message
    assert not comparison.active and not comparison.action.isChecked()  # back to the follow-up alone
    assert window.session.views["left"].frame != PRIOR_FRAME and window.session.views["left"].ready
    # the PACS gone: the node points at a closed port
    assert main(["pacs", "remove", "web"]) == 0
    assert main(["pacs", "add", "web", "--dicomweb", "http://127.0.0.1:9/dicom-web"]) == 0
    owner = Store.open(trial())
    try:
        with open_client(config.get_node("get")) as client:
            study_pacs.publish(owner, "online", client, codes=[prior_code])  # published, and the PACS unreachable
    finally:
        owner.close()
    said.clear()
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_P, Qt.ControlModifier)
    qtbot.waitUntil(lambda: any(m.startswith(f"Cannot fetch {prior_code}") for m in said), timeout=60000)
    message = next(m for m in said if m.startswith(f"Cannot fetch {prior_code}"))
    assert "\n" not in message and "Traceback" not in message
    assert not comparison.active and not comparison.action.isChecked()
    window.close()


def test_while_the_next_case_is_fetched_the_previous_one_is_not_left_open_under_its_code(trial, nodes, qtbot):
    """The title and worklist named the case being fetched while the views and the lesion panel still held the
    previous case's images and read: a lesion marked then went into the previous case (issue-16 trial)."""
    from cno_annotate_ui.main_window import MainWindow

    assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    window = MainWindow(trial(READER), reader=READER, reading_study="online", pacs="web")
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.open_next_case()
    first = window.current_code
    second = next(e["reading_code"] for e in rs.worklist(window.store, "online", READER) if e["reading_code"] != first)
    window.open_case(second)  # fetched in the background: nothing of the first case may stay open meanwhile
    assert window.current_code == second and window.read_session is None
    assert all(not window.session.views[name].ready for name in ("left", "right"))
    assert all(f"Fetching {second}" in window.session.views[name].message for name in ("left", "right"))
    assert first not in window.case_info.text() and window.panels["left"].series.count() == 0
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        pass
    assert window.read_session is not None and window.session.views["left"].ready
    window.close()

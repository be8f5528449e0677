"""PACS query, retrieve and send against a real Orthanc (DICOMweb plugin, DIMSE), started once for the module.

Orthanc runs on 127.0.0.1 with free ports, a temporary storage folder, HTTP basic
authentication, the test's AE registered (for C-FIND, C-GET and as C-MOVE
destination) and every other calling AE refused. The sample study that
``cno-annotate sample`` writes is uploaded once.
"""

from __future__ import annotations

import contextlib
import json
import stat
import threading

import pydicom
import pytest

from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.pacs import config
from cno_annotate.pacs.client import open_client
from cno_annotate.pacs.retrieve import retrieve_study
from cno_annotate.store import Store
from tests import orthanc_server
from tests.pacs_fixtures import AE


@contextlib.contextmanager
def opened(root):
    store = Store.open(root)
    try:
        yield store
    finally:
        store.close()


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STRANGER = "STRANGER"


def _held(store: Store, study_uid: str) -> list[str]:
    return sorted(r[0] for r in store.db.execute(
        "SELECT i.sop_uid FROM images i JOIN dicom_series d USING (series_uid) WHERE d.study_uid = ? AND i.frame = 0",
        (study_uid,)))


# -- configuration and credentials ---------------------------------------------------------------------------------
def test_nodes_are_listed_without_credentials_and_removed(nodes, cli, tmp_path, monkeypatch):
    monkeypatch.delenv("CNO_PACS_USER_WEB")
    monkeypatch.delenv("CNO_PACS_PASSWORD_WEB")
    secrets = tmp_path / "config" / config.CREDENTIALS_FILE
    secrets.write_text(json.dumps({"schema_version": config.CREDENTIALS_SCHEMA,
                                   "nodes": {"web": {"user": orthanc_server.USER,
                                                     "password": orthanc_server.PASSWORD}}}))
    secrets.chmod(0o600)
    code, out, err = cli("pacs", "echo", "web")
    assert code == 0, err
    code, listed, err = cli("pacs", "list")
    assert code == 0 and "web" in listed and "C-MOVE as CNOTEST" in listed and "C-GET as CNOTEST" in listed
    code, as_json, _ = cli("pacs", "list", "--json")
    assert {n["name"] for n in json.loads(as_json)} == {"web", "get", "move"}
    for text in (listed, as_json, (tmp_path / "config" / config.CONFIG_FILE).read_text()):
        assert orthanc_server.PASSWORD not in text
    assert repr(config.credentials_for("web")) == "<credentials>"
    code, out, err = cli("pacs", "remove", "get")
    assert code == 0 and set(config.load_nodes()) == {"web", "move"}


def test_a_credentials_file_others_can_read_is_refused_in_one_line(nodes, cli, tmp_path, monkeypatch):
    monkeypatch.delenv("CNO_PACS_USER_WEB")
    monkeypatch.delenv("CNO_PACS_PASSWORD_WEB")
    secrets = tmp_path / "config" / config.CREDENTIALS_FILE
    secrets.write_text(json.dumps({"schema_version": config.CREDENTIALS_SCHEMA,
                                   "nodes": {"web": {"user": orthanc_server.USER,
                                                     "password": orthanc_server.PASSWORD}}}))
    secrets.chmod(0o644)
    code, out, err = cli("pacs", "find", "web")
    assert code == 1 and "can be read by others" in err and "chmod 600" in err
    assert err.count("\n") == 1 and orthanc_server.PASSWORD not in out + err
    secrets.chmod(0o600)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert cli("pacs", "find", "web")[0] == 0


def test_wrong_credentials_get_a_one_line_message_that_shows_none(nodes, cli, monkeypatch):
    monkeypatch.setenv("CNO_PACS_PASSWORD_WEB", "not-the-password")
    code, out, err = cli("pacs", "find", "web")
    assert code == 1 and "refused the credentials (HTTP 401)" in err and err.count("\n") == 1
    assert "not-the-password" not in out + err


def test_bad_node_definitions_are_refused_in_one_line(nodes, cli):
    for args, words in ((("x", "--dimse", "ORTHANC:4242"), "AE@HOST:PORT"),
                        (("x", "--dicomweb", "ftp://host"), "http://"),
                        (("x", "--dimse", "A@h:70000"), "TCP port"),
                        (("x y", "--dicomweb", "http://h"), "PACS name"),
                        (("web", "--dicomweb", "http://h"), "already registered"),
                        (("x", "--dicomweb", "http://h", "--retrieve", "move"), "DIMSE nodes")):
        code, out, err = cli("pacs", "add", *args)
        assert code == 1 and words in err and err.count("\n") == 1, (args, err)
    assert set(config.load_nodes()) == {"web", "get", "move"}
    code, out, err = cli("pacs", "echo", "nowhere")
    assert code == 1 and "no PACS named 'nowhere'" in err


# -- query ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["web", "get"])
def test_find_studies_by_each_key_then_the_series(nodes, pacs, cli, name):
    _, study, study_uid = pacs
    header = pydicom.dcmread(next(p for p in study.rglob("*") if p.is_file() and p.suffix != ".json"))
    day = str(header.StudyDate)

    def found(*keys: str) -> list[str]:
        code, out, err = cli("pacs", "find", name, *keys, "--json")
        assert code == 0, err
        return [s["study_uid"] for s in json.loads(out)]

    assert cli("pacs", "echo", name)[0] == 0
    assert found() == [study_uid]
    assert found("--patient-id", str(header.PatientID)) == [study_uid]
    assert found("--patient-id", "NOBODY") == []
    assert found("--accession", str(header.AccessionNumber)) == [study_uid]
    assert found("--date", f"{day}-{day}") == [study_uid]
    assert found("--date", f"-{int(day) - 1}") == []
    assert found("--modality", "MR") == [study_uid]
    assert found("--modality", "CT") == []
    assert found("--name", str(header.PatientName)[:3] + "*") == [study_uid]
    code, out, err = cli("pacs", "find", name, "--study", study_uid, "--json")
    series = json.loads(out)
    assert code == 0 and len(series) == 4 and {s["instances"] for s in series} == {6}
    code, out, err = cli("pacs", "find", name, "--date", "2024-13")
    assert code == 2 and "YYYYMMDD" in err


# -- retrieve ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["web", "get", "move"])
def test_retrieve_imports_every_instance_and_a_second_run_fetches_nothing(nodes, pacs, cli, tmp_path, name):
    server, _, study_uid = pacs
    store_dir = tmp_path / "store"
    code, out, err = cli("pacs", "retrieve", name, study_uid, "--store", store_dir)
    assert code == 0, err
    assert "retrieved 24 of 24 instances" in out and "imported 4 series" in out
    assert err.index("t2_tirm") < err.index("t1_tse")  # STIR series come first
    with opened(store_dir) as store:
        assert _held(store, study_uid) == server.study_instances(study_uid)
        composed = [v.role for v in store.volumes(study_uid) if v.kind == "composed"]
        assert sorted(composed) == ["STIR", "T1"]
    code, out, err = cli("pacs", "retrieve", name, study_uid, "--store", store_dir)
    assert code == 0 and "retrieved 0 of 0 instances (24 already in the store)" in out


@pytest.mark.parametrize("name", ["web", "get", "move"])
def test_a_retrieve_cancelled_midway_keeps_what_arrived_and_resumes_with_the_rest(nodes, pacs, tmp_path, name):
    server, _, study_uid = pacs
    client = open_client(config.get_node(name))
    cancel = threading.Event()

    def progress(received: int, expected: int) -> None:
        if received >= 9:
            cancel.set()

    with opened(tmp_path / "store") as store:
        first = retrieve_study(store, client, study_uid, progress=progress, cancel=cancel)
        kept = _held(store, study_uid)
        assert first.cancelled and 9 <= len(kept) < 24 and len(kept) == first.received
        second = retrieve_study(store, client, study_uid)
        assert not second.cancelled and second.received == second.expected == 24 - len(kept)
        assert second.already_in_store == len(kept)
        assert _held(store, study_uid) == server.study_instances(study_uid)


def test_an_interrupt_in_the_middle_of_a_series_keeps_the_files_that_arrived(nodes, pacs, tmp_path):
    server, _, study_uid = pacs
    client = open_client(config.get_node("get"))
    arrived = [0]

    class CtrlC(threading.Event):
        """Ctrl-C in the retrieving thread once 3 instances have arrived (mid-series)."""

        def is_set(self) -> bool:
            if arrived[0] >= 3:
                raise KeyboardInterrupt
            return False

    def progress(received: int, expected: int) -> None:
        arrived[0] = received

    with opened(tmp_path / "store") as store:
        with pytest.raises(KeyboardInterrupt):
            retrieve_study(store, client, study_uid, progress=progress, cancel=CtrlC())
        kept = len(_held(store, study_uid))
        assert 3 <= kept < 6  # the first series (6 instances) was cut off; what arrived is imported
        report = retrieve_study(store, client, study_uid)
        assert report.received == 24 - kept and _held(store, study_uid) == server.study_instances(study_uid)


# -- failures ---------------------------------------------------------------------------------------------------------
def test_wrong_port_is_one_line_for_dimse_and_dicomweb(nodes, cli, tmp_path):
    closed = orthanc_server.free_port()
    assert cli("pacs", "add", "deaf", "--dimse", f"ORTHANC@127.0.0.1:{closed}", "--calling-ae", AE)[0] == 0
    assert cli("pacs", "add", "deafweb", "--dicomweb", f"http://127.0.0.1:{closed}/dicom-web")[0] == 0
    for name, words in (("deaf", f"nothing listens on 127.0.0.1:{closed}"), ("deafweb", "cannot connect")):
        for action in (("echo", name), ("find", name), ("retrieve", name, "1.2.3", "--store", tmp_path / "s")):
            code, out, err = cli("pacs", *action)
            assert code == 1 and words in err and err.count("\n") == 1, (action, err)


def test_an_unknown_calling_ae_is_rejected_with_a_message_saying_to_register_it(nodes, pacs, cli, tmp_path):
    server, _, study_uid = pacs
    address = f"ORTHANC@127.0.0.1:{server.dicom_port}"
    assert cli("pacs", "add", "stranger", "--dimse", address, "--calling-ae", STRANGER)[0] == 0
    for action in (("echo", "stranger"), ("retrieve", "stranger", study_uid, "--store", tmp_path / "s")):
        code, out, err = cli("pacs", *action)
        assert code == 1 and "rejected the association" in err and f"register {STRANGER}" in err
        assert err.count("\n") == 1


def test_an_unknown_move_destination_says_to_register_it_or_use_c_get_and_keeps_the_store(nodes, pacs, cli,
                                                                                        sample_copy, move_port):
    server, _, study_uid = pacs
    address = f"ORTHANC@127.0.0.1:{server.dicom_port}"
    assert cli("pacs", "add", "lost", "--dimse", address, "--calling-ae", AE, "--retrieve", "move",
               "--move-ae", "NOWHERE", "--move-port", str(move_port))[0] == 0
    store = sample_copy("store-with-a-study")
    before = store.studies()
    code, out, err = cli("pacs", "retrieve", "lost", study_uid, "--store", store.root)
    assert code == 1 and err.count("\n") == 1
    # Orthanc answers 0xC000 (unable to process) where the standard has 0xA801; both say what to do.
    assert "0xC000" in err and "register NOWHERE" in err and "--retrieve get" in err
    assert store.studies() == before


# -- round trip: retrieve, read, export SR, send, read it back ----------------------------------------------------
def test_retrieve_read_export_sr_send_it_back_and_read_it_from_orthanc(nodes, pacs, cli, tmp_path):
    server, _, study_uid = pacs
    store_dir = tmp_path / "store"
    assert cli("pacs", "retrieve", "move", study_uid, "--store", store_dir)[0] == 0
    with opened(store_dir) as store:
        stir = next(v for v in store.volumes(study_uid) if v.kind == "composed" and v.role == "STIR")
        session = ReadSession.open_or_create(store, study_uid, "dr-pacs")
        lesion = session.add_lesion((-40.0, 0.0, -150.0), stir.volume_id, (1, 1, 1), site_id="femur.distal",
                                    side="R", subsite="metaphysis")
        session.set_grade(lesion, "marrow_hyperintensity", 2)
        session.submit()
        read = load_read(store, session.read.read_id)
    code, out, err = cli("read", "export-sr", "--store", store_dir, "--out", tmp_path / "sr")
    assert code == 0, err
    sr_file = tmp_path / "sr" / f"{read.read_id}.sr.dcm"
    sr_uid = str(pydicom.dcmread(sr_file).SOPInstanceUID)
    code, out, err = cli("pacs", "send", "web", sr_file)
    assert code == 0 and "sent 1 file to web" in out, err
    try:
        assert sr_uid in server.study_instances(study_uid)
        _read_back(cli, tmp_path, study_uid, sr_uid, read)
    finally:
        server.delete_instance(sr_uid)


def _read_back(cli, tmp_path, study_uid, sr_uid, read):
    # The SR comes back through a retrieve of the study (only the new instance is fetched) ...
    other = tmp_path / "other-store"
    assert cli("pacs", "retrieve", "get", study_uid, "--store", other)[0] == 0
    code, out, err = cli("pacs", "retrieve", "get", study_uid, "--store", other)
    assert "retrieved 0 of 0" in out  # the SR is not fetched again either
    back = next((other / "retrieved" / study_uid).glob(f"*/{sr_uid}.dcm"))
    # ... and imports as the same read.
    code, out, err = cli("read", "import-sr", "--store", other, back)
    assert code == 0, err
    with opened(other) as store:
        again = load_read(store, read.read_id)
        assert again.reader == "dr-pacs" and len(again.lesions) == 1

        def content(lesion):
            return lesion.position, lesion.site_id, lesion.side, lesion.subsite, lesion.grades

        assert content(again.lesions[0]) == content(read.lesions[0])


def test_send_by_c_store_and_a_file_that_is_not_dicom_sends_nothing(nodes, pacs, cli, tmp_path):
    server, study, study_uid = pacs
    source = next(p for p in study.rglob("*") if p.is_file() and p.suffix != ".json")
    dataset = pydicom.dcmread(source)
    dataset.SOPInstanceUID = pydicom.uid.generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    copy = tmp_path / "copy.dcm"
    dataset.save_as(copy, enforce_file_format=True)
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    code, out, err = cli("pacs", "send", "get", copy, junk)
    assert code == 1 and "nothing sent" in err and "notes.txt" in err
    assert str(dataset.SOPInstanceUID) not in server.study_instances(study_uid)
    code, out, err = cli("pacs", "send", "get", copy)
    assert code == 0, err
    assert str(dataset.SOPInstanceUID) in server.study_instances(study_uid)
    server.delete_instance(str(dataset.SOPInstanceUID))

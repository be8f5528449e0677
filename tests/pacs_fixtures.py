"""Pytest fixtures of the PACS tests: one real Orthanc per test module, and nodes registered for it."""

from __future__ import annotations

import json

import pytest

from tests import orthanc_server

AE = "CNOTEST"


@pytest.fixture(scope="module")
def move_port() -> int:
    """The port of the C-MOVE storage SCP (registered in Orthanc for AE)."""
    return orthanc_server.free_port()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, move_port):
    """A running Orthanc holding a sample study; yields (server, study folder, study UID)."""
    why = orthanc_server.missing()
    if why:
        pytest.fail(why)
    from cno_annotate.cli import main

    study = tmp_path_factory.mktemp("pacs-sample") / "study"
    assert main(["sample", "--out", str(study), "--stations", "2", "--slices", "6", "--matrix", "32"]) == 0
    server = orthanc_server.Orthanc(tmp_path_factory.mktemp("orthanc"), {AE: move_port}).start()
    try:
        files = sorted(p for p in study.rglob("*") if p.is_file() and p.name != "ground_truth.json")
        server.upload(files)
        study_uid = json.loads((study / "ground_truth.json").read_text())["study_uid"]
        yield server, study, study_uid
    finally:
        server.stop()


@pytest.fixture
def nodes(pacs, tmp_path, monkeypatch, move_port):
    """A fresh per-user configuration with nodes 'web' (DICOMweb), 'get' and 'move' (DIMSE)."""
    from cno_annotate.cli import main

    server, _, _ = pacs
    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("CNO_PACS_USER_WEB", orthanc_server.USER)
    monkeypatch.setenv("CNO_PACS_PASSWORD_WEB", orthanc_server.PASSWORD)
    dimse = f"{orthanc_server.CALLED_AE}@127.0.0.1:{server.dicom_port}"
    for args in (("web", "--dicomweb", server.dicomweb_url),
                 ("get", "--dimse", dimse, "--calling-ae", AE),
                 ("move", "--dimse", dimse, "--calling-ae", AE, "--retrieve", "move", "--move-port", str(move_port))):
        assert main(["pacs", "add", *args]) == 0
    return server

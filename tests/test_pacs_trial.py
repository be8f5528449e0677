"""What a new user met with the PACS commands: messages that say what to check, and no secret saved or shown."""

from __future__ import annotations

import pytest

from cno_annotate.pacs import config
from tests import orthanc_server
from tests.pacs_fixtures import AE, move_port, nodes, pacs  # noqa: F401 (a real Orthanc, one per test module)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class EchoForAnyone(orthanc_server.Orthanc):
    """An Orthanc that answers C-ECHO from any calling AE but queries only from registered ones (a common setup)."""

    def configuration(self) -> dict:
        return {**super().configuration(), "DicomAlwaysAllowEcho": True}


def test_a_pacs_that_echoes_but_refuses_queries_from_an_unknown_ae_says_to_register_it(
        nodes, cli, tmp_path, monkeypatch):  # noqa: F811
    server = EchoForAnyone(tmp_path / "orthanc", {AE: orthanc_server.free_port()}).start()
    try:
        address = f"{orthanc_server.CALLED_AE}@127.0.0.1:{server.dicom_port}"
        assert cli("pacs", "add", "picky", "--dimse", address, "--calling-ae", "STRANGER")[0] == 0
        assert cli("pacs", "echo", "picky")[0] == 0
        for action in (("find", "picky"), ("retrieve", "picky", "1.2.3", "--store", tmp_path / "s")):
            code, out, err = cli("pacs", *action)
            assert code == 1 and err.count("\n") == 1, err
            assert "may not know calling AE 'STRANGER'" in err and "register STRANGER" in err, err
    finally:
        server.stop()


def test_a_dicomweb_url_with_a_user_and_password_is_refused_and_never_saved_or_shown(nodes, cli, tmp_path):  # noqa: F811
    url = nodes.dicomweb_url.replace("http://", f"http://{orthanc_server.USER}:{orthanc_server.PASSWORD}@")
    code, out, err = cli("pacs", "add", "leaky", "--dicomweb", url)
    assert code == 1 and err.count("\n") == 1 and "pacs-credentials.json" in err and "CNO_PACS_USER_LEAKY" in err
    assert orthanc_server.PASSWORD not in out + err
    assert orthanc_server.PASSWORD not in (tmp_path / "config" / config.CONFIG_FILE).read_text()
    assert "leaky" not in config.load_nodes()


def test_the_credentials_refusal_names_the_environment_variables_of_a_node_with_dashes_and_dots(
        nodes, cli):  # noqa: F811
    assert cli("pacs", "add", "st-mary.pacs", "--dicomweb", nodes.dicomweb_url)[0] == 0
    code, out, err = cli("pacs", "find", "st-mary.pacs")
    assert code == 1 and "HTTP 401" in err and err.count("\n") == 1
    assert "CNO_PACS_USER_ST_MARY_PACS" in err and "CNO_PACS_PASSWORD_ST_MARY_PACS" in err


# -- find's input and output ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["web", "get"])
def test_malformed_or_impossible_dates_are_usage_errors(nodes, cli, name):  # noqa: F811
    for date in ("20261301", "20260230", "2024-13", "20240101-2024", "yesterday"):
        code, out, err = cli("pacs", "find", name, "--date", date)
        assert code == 2 and "date" in err and "Traceback" not in err, (date, err)


def test_find_prints_a_header_and_aligned_columns_with_the_patient_name(nodes, pacs, cli):  # noqa: F811
    _, _, study_uid = pacs
    code, out, err = cli("pacs", "find", "get")
    header, row = out.splitlines()[:2]
    assert header.split()[:2] == ["STUDY", "UID"] and "PATIENT NAME" in header
    for column, value in (("DATE", row.split()[1]), ("PATIENT ID", row.split()[2])):
        assert header.index(column) == row.index(value, len(study_uid)), (column, header, row)
    code, out, err = cli("pacs", "find", "get", "--study", study_uid)
    lines = out.splitlines()
    assert lines[0].startswith("SERIES UID")
    numbers = [int(line.split()[2]) for line in lines[1:]]
    assert numbers == sorted(numbers) and len(numbers) == 4


# -- retrieve: interrupted, or from a PACS that is down ------------------------------------------------------------------
def test_an_interrupted_retrieve_says_how_many_instances_were_kept_and_to_run_it_again(
        nodes, pacs, cli, tmp_path, monkeypatch):  # noqa: F811
    from cno_annotate import cli_pacs

    _, _, study_uid = pacs

    def ctrl_c_at_the_third(self, received: int, expected: int) -> None:
        if received >= 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_pacs._Progress, "__call__", ctrl_c_at_the_third)
    code, out, err = cli("pacs", "retrieve", "web", study_uid, "--store", tmp_path / "store")
    last = err.splitlines()[-1]
    assert code == 1 and "interrupted: 3 instances of the study are kept" in last
    assert "run the same command again" in last


def test_a_retrieve_from_a_stopped_pacs_creates_no_store(nodes, cli, tmp_path):  # noqa: F811
    closed = orthanc_server.free_port()
    assert cli("pacs", "add", "down", "--dimse", f"ORTHANC@127.0.0.1:{closed}", "--calling-ae", AE)[0] == 0
    code, out, err = cli("pacs", "retrieve", "down", "1.2.3", "--store", tmp_path / "new-store")
    assert code == 1 and "nothing listens" in err and not (tmp_path / "new-store").exists()

"""Retrieve of compressed studies (JPEG 2000, JPEG-LS, JPEG, RLE, deflated) from a real Orthanc, by each method.

Orthanc keeps instances in the transfer syntax they arrived in and cannot transcode JPEG 2000
to an uncompressed syntax: a C-GET must offer the compressed transfer syntaxes (one presentation
context each) and WADO-RS must ask for the stored syntax, or the PACS refuses the series.
The compressed copies come from pydicom's own test files; each is one series of one study.
"""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, generate_uid

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
#: pydicom test files, each in another compressed transfer syntax.
COMPRESSED = ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm",
              "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm"]


@pytest.fixture(scope="module")
def compressed_study(pacs, tmp_path_factory):
    """One study on the Orthanc of ``pacs`` whose series are compressed copies; yields (UID, {SOP UID: syntax})."""
    server, _, _ = pacs
    folder = tmp_path_factory.mktemp("compressed")
    study_uid = generate_uid()
    datasets = [pydicom.dcmread(get_testdata_file(name)) for name in COMPRESSED]
    j2k = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    j2k.compress(JPEG2000Lossless)
    datasets.append(j2k)
    syntaxes = {}
    files = []
    for number, dataset in enumerate(datasets, start=1):
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.SeriesNumber = number
        dataset.PatientID, dataset.PatientName = "CNO-COMPRESSED", "Compressed^Test"
        path = folder / f"{number}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
        syntaxes[str(dataset.SOPInstanceUID)] = str(dataset.file_meta.TransferSyntaxUID)
    server.upload(files)
    yield study_uid, syntaxes
    for sop_uid in syntaxes:
        server.delete_instance(sop_uid)


@pytest.mark.parametrize("name", ["web", "get", "move"])
def test_a_compressed_study_arrives_whole_in_its_stored_transfer_syntax(nodes, compressed_study, cli,
                                                                        tmp_path, name):
    study_uid, syntaxes = compressed_study
    store_dir = tmp_path / "store"
    code, out, err = cli("pacs", "retrieve", name, study_uid, "--store", store_dir, "--json")
    report = json.loads(out)
    results = {o["number"]: o["result"] for o in report["outcomes"]}
    # The grey series (JPEG-LS, RLE, JPEG 2000 lossless, deflated) are imported; the importer refuses
    # the colour secondary capture (grey levels only): exit status 1.
    assert results[1] == results[2] == results[5] == results[6] == "imported" and code == 1, report["outcomes"]
    assert results[4] != "imported", report["outcomes"]
    assert report["received"] == report["expected"] == len(syntaxes) and not report["failed"], report
    arrived = {path.stem: pydicom.dcmread(path) for path in (store_dir / "retrieved" / study_uid).glob("*/*.dcm")}
    assert {uid: str(d.file_meta.TransferSyntaxUID) for uid, d in arrived.items()} == syntaxes
    for dataset in arrived.values():
        assert dataset.pixel_array.size > 0  # decodable as it arrived


def test_a_series_the_pacs_refuses_does_not_stop_the_others_and_is_named_with_the_reason(
        nodes, compressed_study, pacs, tmp_path, monkeypatch):
    from cno_annotate.pacs import config, dimse
    from cno_annotate.pacs.client import open_client
    from cno_annotate.pacs.retrieve import retrieve_study
    from cno_annotate.store import Store

    study_uid, syntaxes = compressed_study
    # Offer only the uncompressed syntaxes, as a C-GET client that cannot decode them would: Orthanc
    # cannot transcode JPEG 2000 and refuses those series; the others must still arrive.
    monkeypatch.setattr(dimse, "COMPRESSED_SYNTAXES", [])
    store = Store.open(tmp_path / "store")
    try:
        report = retrieve_study(store, open_client(config.get_node("get")), study_uid)
    finally:
        store.close()
    j2k = {uid for uid, syntax in syntaxes.items() if syntax.startswith("1.2.840.10008.1.2.4.9")}
    assert report.failed and len(report.failed) == len(j2k)
    assert all(f["reason"] for f in report.failed)
    assert report.received == len(syntaxes) - len(j2k)


# -- what the importer made of each series ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study_with_sr(pacs, tmp_path_factory):
    """The sample study on Orthanc plus a structured report in a series of its own; yields (study UID, SR UID)."""
    server, study, study_uid = pacs
    header = pydicom.dcmread(next(p for p in sorted(study.rglob("*")) if p.is_file() and p.suffix != ".json"))
    sr = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
        setattr(sr, keyword, header.get(keyword, ""))
    sr.SeriesInstanceUID = generate_uid()
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.SeriesNumber = 99
    path = tmp_path_factory.mktemp("sr") / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    server.upload([path])
    yield study_uid, str(sr.SOPInstanceUID)
    server.delete_instance(str(sr.SOPInstanceUID))


def test_retrieve_says_per_series_what_the_importer_did_and_counts_only_what_the_store_holds(
        nodes, study_with_sr, cli, tmp_path):
    study_uid, sr_uid = study_with_sr
    store_dir = tmp_path / "store"
    code, out, err = cli("pacs", "retrieve", "get", study_uid, "--store", store_dir)
    assert code == 0, err
    assert "imported 4 series" in out and "1 series kept as non-image files (SR)" in out
    assert "kept series 99" in err and "imported series 99" not in err
    code, out, err = cli("pacs", "retrieve", "get", study_uid, "--store", store_dir)
    assert code == 0 and "retrieved 0 of 0 instances (24 already in the store, 1 kept as non-image files)" in out


def test_series_the_importer_refuses_are_named_with_the_reason_not_counted_as_imported(
        nodes, pacs, cli, tmp_path):
    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store

    _, study, study_uid = pacs
    # The store already holds this study UID for another patient: every retrieved series is refused.
    other = pydicom.dcmread(next(p for p in sorted(study.rglob("*")) if p.is_file() and p.suffix != ".json"))
    other.PatientID, other.PatientName = "SOMEONE-ELSE", "Else^Someone"
    other.SeriesInstanceUID = generate_uid()
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    first = tmp_path / "other.dcm"
    other.save_as(first, enforce_file_format=True)
    store_dir = tmp_path / "store"
    store = Store.open(store_dir)
    try:
        import_paths(store, [first])
    finally:
        store.close()
    code, out, err = cli("pacs", "retrieve", "get", study_uid, "--store", store_dir)
    assert code == 1 and "imported 0 series" in out and "imported series" not in err
    assert err.count("refused series") == 4 and "another patient" in err
    code, out, err = cli("pacs", "retrieve", "get", study_uid, "--store", store_dir)
    assert "already in the store" not in out and "24 refused by the importer" in out


# -- one-line refusals -----------------------------------------------------------------------------------------------
def test_find_of_a_malformed_study_uid_is_a_usage_error_on_both_protocols(nodes, cli):
    for name in ("web", "get"):
        code, out, err = cli("pacs", "find", name, "--study", "not a uid")
        assert code == 2 and "not a study instance UID" in err and "Traceback" not in err, (name, err)


def test_send_says_per_file_what_the_pacs_refused_and_sends_the_rest(nodes, pacs, cli, tmp_path):
    # By C-STORE: Orthanc refuses a SOP class it does not know (by STOW-RS it stores any).
    name = "get"
    server, study, study_uid = pacs
    source = next(p for p in sorted(study.rglob("*")) if p.is_file() and p.suffix != ".json")
    good = pydicom.dcmread(source)
    good.SOPInstanceUID = good.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    good.save_as(tmp_path / "good.dcm", enforce_file_format=True)
    odd = pydicom.dcmread(source)  # a SOP class the PACS does not store (a made-up private one)
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.1"
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    odd.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    try:
        code, out, err = cli("pacs", "send", name, tmp_path / "odd.dcm", tmp_path / "good.dcm")
        assert code == 1 and "Traceback" not in err
        assert "odd.dcm not sent" in err and err.count("\n") == 1, err
        assert "sent 1 of 2 files" in out
        held = server.study_instances(study_uid)
        assert str(good.SOPInstanceUID) in held and str(odd.SOPInstanceUID) not in held
    finally:
        server.delete_instance(str(good.SOPInstanceUID))

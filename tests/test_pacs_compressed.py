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
    assert code == 0, err
    report = json.loads(out)
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

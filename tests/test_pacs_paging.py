"""DICOMweb searches page through a server's limit: no match is silently left out.

A real Orthanc holds five small studies. Orthanc 1.10's own ``LimitFindResults``
cannot be paged through at all (its QIDO-RS answers at most the limit + 1
matches at any offset, measured: 3 of 5 studies with limit 2), so a server that
caps each answer and pages properly (as dcm4chee's QIDO limit or a cloud
archive's page size do) is Orthanc behind a loopback proxy that caps every
QIDO-RS answer at ``CAP`` matches and passes ``offset`` on.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cno_annotate.pacs import config
from cno_annotate.pacs.client import open_client
from cno_annotate.pacs.query import StudyQuery
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from tests import orthanc_server

CAP = 2
STUDIES = 5


class _CappingProxy(BaseHTTPRequestHandler):
    """Forwards GETs to Orthanc; a QIDO-RS search gets ``limit`` at most CAP."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path, _, query = self.path.partition("?")
        if path.rstrip("/").endswith(("/studies", "/series", "/instances")):
            params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
            params["limit"] = str(min(int(params.get("limit") or CAP), CAP))
            query = urllib.parse.urlencode(params, safe="*^,")
        request = urllib.request.Request(self.target + path + (f"?{query}" if query else ""))
        for header in ("Authorization", "Accept"):
            if self.headers.get(header):
                request.add_header(header, self.headers[header])
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, body, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc holding five studies (four series of three instances each)."""
    why = orthanc_server.missing()
    if why:
        pytest.fail(why)
    root = tmp_path_factory.mktemp("paging")
    files = []
    for n in range(STUDIES):
        folder = root / f"study{n}"
        generate_study(folder, StudyPlan(stations=2, slices=3, matrix=16, seed=40 + n))
        files += sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "ground_truth.json")
    server = orthanc_server.Orthanc(tmp_path_factory.mktemp("orthanc-paging"), {}).start()
    try:
        server.upload(files)
        yield server
    finally:
        server.stop()


@pytest.fixture
def capped(orthanc, tmp_path, monkeypatch):
    """Node 'capped' (DICOMweb through the capping proxy) and 'web' (Orthanc itself)."""
    handler = type("Handler", (_CappingProxy,), {"target": orthanc.url})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "config"))
    for name in ("CAPPED", "WEB"):
        monkeypatch.setenv(f"CNO_PACS_USER_{name}", orthanc_server.USER)
        monkeypatch.setenv(f"CNO_PACS_PASSWORD_{name}", orthanc_server.PASSWORD)
    config.add_node(config.PacsNode("capped", config.Protocol.DICOMWEB, f"http://127.0.0.1:{proxy.server_port}/dicom-web"))
    config.add_node(config.PacsNode("web", config.Protocol.DICOMWEB, orthanc.dicomweb_url))
    try:
        yield
    finally:
        proxy.shutdown()
        proxy.server_close()


def _all_studies(node: str, query: StudyQuery | None = None) -> list[str]:
    with open_client(config.get_node(node)) as client:
        return [s.study_uid for s in client.find_studies(query or StudyQuery())]


def test_a_study_search_pages_through_the_servers_limit(capped, orthanc):
    on_server = sorted(orthanc.get("/studies"))
    assert len(on_server) == STUDIES
    found = _all_studies("capped")
    assert len(found) == STUDIES and len(set(found)) == STUDIES  # every study once, none left out


def test_series_and_instance_searches_page_and_a_retrieve_gets_every_instance(capped, tmp_path):
    study_uid = _all_studies("web")[0]
    with open_client(config.get_node("web")) as client:
        series = client.find_series(study_uid)
        instances = {s.series_uid: client.instance_uids(study_uid, s.series_uid) for s in series}
    assert len(series) > CAP and all(len(uids) > CAP for uids in instances.values())
    with open_client(config.get_node("capped")) as client:
        assert sorted(s.series_uid for s in client.find_series(study_uid)) == sorted(instances)
        for series_uid, uids in instances.items():
            assert sorted(client.instance_uids(study_uid, series_uid)) == sorted(uids)
        store = Store.open(tmp_path / "store")
        try:
            from cno_annotate.pacs.retrieve import retrieve_study

            report = retrieve_study(store, client, study_uid)
        finally:
            store.close()
    assert report.received == sum(len(uids) for uids in instances.values())


def test_a_modality_search_on_orthanc_itself_finds_every_study_once(capped):
    """Orthanc ignores the offset of a ModalitiesInStudy search (answers all again): no endless loop, no repeat."""
    found = _all_studies("web", StudyQuery(modality="MR"))
    assert len(found) == STUDIES and len(set(found)) == STUDIES
